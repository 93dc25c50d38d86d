"""What the measurement scripts that play speech through the simulated rooms share: the ``--rooms`` and ``--seeds``
options read and checked before any model loads, the rooms and seeds to go through, and a signal through a room's
user path (the assistant silent)."""

from __future__ import annotations

import argparse
from typing import Iterator

import numpy as np


def add_room_options(ap: argparse.ArgumentParser, seeds_help: str = "comma-separated room seeds") -> None:
    ap.add_argument("--rooms", default="dry,laptop,speakerphone", help="comma-separated: dry and room presets")
    ap.add_argument("--seeds", default="0", help=seeds_help)


def rooms_and_seeds(ap: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[list[str], list[int]]:
    """The rooms and seeds asked for; an unknown room or a seed that is not a number is one usage line and exit
    code 2."""
    from core.audio.room import get_preset

    rooms = [r.strip() for r in args.rooms.split(",") if r.strip()]
    try:
        seeds = [int(x) for x in args.seeds.split(",")]
        for room in rooms:
            if room != "dry":
                get_preset(room)
    except ValueError as exc:         # one line, before any model loads
        ap.error(str(exc))
    return rooms, seeds


def each_room(rooms: list[str], seeds: list[int]) -> Iterator[tuple[str, int]]:
    """(room, seed) pairs: "dry" once, every other room with each seed."""
    for room in rooms:
        for seed in ([0] if room == "dry" else seeds):
            yield room, seed


def through_room(speech: np.ndarray, room: str, seed: int, lead: int = 8000, tail: int = 8000) -> np.ndarray:
    """``speech`` (16 kHz) between ``lead`` and ``tail`` samples of silence, through the user's path of ``room``
    with its noise and no echo ("dry": as it is)."""
    sig = np.concatenate([np.zeros(lead, np.float32), np.asarray(speech, np.float32), np.zeros(tail, np.float32)])
    if room == "dry":
        return sig
    from core.audio.room import EchoRoom

    return EchoRoom(room, seed=seed).mic(sig, np.zeros_like(sig))
