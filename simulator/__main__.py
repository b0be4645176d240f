"""``python -m simulator board --link PATH --control SOCKET [--slots N]``: the board simulator."""

from __future__ import annotations

import argparse
import sys

from controller import logs
from simulator.board import run_board


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator")
    sub = parser.add_subparsers(dest="what", required=True)
    board = sub.add_parser("board", help="stand in for the serial dispenser board on a pty")
    board.add_argument("--link", required=True, help="path to link to the pty (the daemon's port)")
    board.add_argument("--control", required=True, help="control socket path (JSON lines)")
    board.add_argument("--slots", type=int, default=8)
    board.add_argument("--buttons", type=int, default=6)
    board.add_argument("--turn-ms", type=int, default=1200, help="how long a spiral turn takes")
    args = parser.parse_args(argv)
    logs.setup()
    return run_board(args.link, args.control, args.slots, args.buttons, args.turn_ms)


if __name__ == "__main__":
    sys.exit(main())
