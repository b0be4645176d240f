"""The hub service: hears every machine, keeps what they say, serves staff and commissioners.

``nspvend hub run`` (hub/cli.py) runs the listener (hub/listener.py: MQTT into the
store), the web pages and JSON (hub/web.py), and the alerts (hub/alerts.py) in one process.
It reads the machines' messages with the same code that writes them (controller/messages.py).
"""
