"""How much a room costs Lite's speech recogniser, as one JSON object: the word error rate of Whisper on spoken
questions, dry and through the simulated rooms, greedy and with beam search.

The 30 questions of Lite's accuracy set (``tests/lite/lite_helpers.py``) are spoken by espeak-ng (the voice and the
speed change from question to question and from seed to seed) and go through the user's path of each room with its
noise, the assistant silent: no echo, no canceller, only the reverberation and the noise. Each rendering is
transcribed greedy (Lite's default) and with each ``--beams`` width.

    .venv/bin/python scripts/measure_room_asr.py --rooms dry,laptop,speakerphone --seeds 0,1,2,3

Run it from a checkout's root (that checkout's code is measured). About 1 s per rendering and width on this
machine's core.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.getcwd())
sys.path.insert(0, os.path.join(os.getcwd(), "tests", "lite"))
from _rooms import add_room_options, each_room, rooms_and_seeds, through_room  # noqa: E402

VOICES = ["en-gb", "en-us", "en-us+f3", "en-us+m3", "en-gb+f2"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_room_options(ap, seeds_help="comma-separated room seeds (they also pick voices and speeds)")
    ap.add_argument("--beams", default="3", help="comma-separated beam widths measured beside greedy")
    args = ap.parse_args()
    rooms, seeds = rooms_and_seeds(ap, args)
    try:
        beams = [1] + [int(x) for x in args.beams.split(",") if x.strip() and int(x) > 1]
    except ValueError as exc:
        ap.error(str(exc))

    import torch

    torch.set_num_threads(1)
    from core.audio.room import NOMINAL_SPEECH_DBFS
    from core.harness.text import wer
    from core.harness.voices import render
    from core.model.lite.asr import WhisperAsr
    from lite_helpers import ACCURACY_QUESTIONS

    asr = WhisperAsr.load()
    table: dict[str, dict] = {}
    examples: list[dict] = []
    for room, seed in each_room(rooms, seeds):
        for i, (question, _) in enumerate(ACCURACY_QUESTIONS):
            voice = VOICES[(i + seed) % len(VOICES)]
            speed = 150 + 10 * ((7 * i + seed) % 4)
            sig = through_room(render(question, voice=voice, speed=speed, level_dbfs=NOMINAL_SPEECH_DBFS),
                               room, seed)
            heard = {}
            for k in beams:
                text = asr.transcribe(sig, beam_size=k).text
                w = wer(question, text)
                row = table.setdefault(room, {}).setdefault("greedy" if k == 1 else f"beam {k}",
                                                            {"words": 0, "errors": 0, "exact": 0, "utterances": 0})
                row["words"] += w["words"]
                row["errors"] += w["errors"]
                row["exact"] += int(w["errors"] == 0)
                row["utterances"] += 1
                heard[k] = text
            if room != "dry" and len(examples) < 12 and wer(question, heard[1])["errors"] >= 2:
                examples.append({"room": room, "seed": seed, "voice": voice, "said": question,
                                 "greedy": heard[1], **{f"beam {k}": heard[k] for k in beams[1:]}})
    for rows in table.values():
        for row in rows.values():
            row["wer"] = round(row["errors"] / max(row["words"], 1), 3)
    print(json.dumps({"bench": "room_asr", "rooms": args.rooms, "seeds": args.seeds, "questions":
                      len(ACCURACY_QUESTIONS), "wer": table, "examples": examples}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
