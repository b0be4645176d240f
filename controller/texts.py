"""What the client reads on the display: plain words, short lines, one idea at a time."""

from __future__ import annotations

WELCOME = "Free. No names. No limits."
PRESS = "Press a button for a pack."


def hub_open_line(hub_name: str) -> str:
    return f"{hub_name} is open now - come in!"


def idle(hub_open: bool, hub_name: str) -> list[str]:
    lines = [WELCOME, PRESS]
    if hub_open:
        lines.append(hub_open_line(hub_name))
    return lines


def vending(product_name: str) -> list[str]:
    return [f"Getting your {product_name}...", "Please wait."]


def thank_you(message: str | None, hub_open: bool, hub_name: str, certain: bool = True) -> list[str]:
    lines = ["Thank you. Take your pack below."]
    if not certain:
        lines.append("If nothing came out, press again.")
    if message:
        lines.append(message)
    if hub_open:
        lines.append(hub_open_line(hub_name))
    return lines


def sorry(product_name: str, alternative: str) -> list[str]:
    return [f"Sorry, no {product_name} left in here.", alternative]


def cannot_dispense(alternative: str) -> list[str]:
    return ["Sorry, the machine cannot give packs", "right now.", alternative]


def out_of_service(alternative: str) -> list[str]:
    return ["Sorry, this machine is closed for now.", alternative]


def service() -> list[str]:
    return ["Being restocked.", "Back in a few minutes."]
