"""How well Whisper's sound test (Lite's ``TurnConfig.sound_margin``) tells short sounds from short replies, as one
JSON object.

Short sounds ("ahem", "hmm", "um", "ha ha ha", a synthetic cough...) and short replies ("Yes.", "Paris.",
"Wait.", "Of course."...) are spoken by espeak-ng in five voices, dry and through the simulated rooms (the user's
own path and the room's noise, the assistant silent), and transcribed by Lite's Whisper with the margin measured.
Per group it prints how many came out as words (not already a sound by the vocabulary of ``core.speech_acts``)
and how many of those the test takes for a sound, and the correctly heard replies it would drop.

    .venv/bin/python scripts/measure_sound_margin.py --rooms laptop,speakerphone --seeds 3,4,5

Run it from a checkout's root (that checkout's code is measured). About 1 s per rendering on this machine's core.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.getcwd())
from _rooms import add_room_options, each_room, rooms_and_seeds, through_room  # noqa: E402

SOUNDS = ["ahem", "ahem, ahem", "hmm", "um", "uh", "ha ha ha", "hrrm", "er", "mmm"]
REPLIES = ["Yes.", "No.", "Thanks.", "Paris.", "What?", "Go on.", "Tell me more.", "Why?", "Hello.", "Sure.",
           "Tokyo.", "Seven.", "Really?", "Nice.", "Stop.", "Again.", "Next.", "Green.", "Wait.", "Hold on.",
           "Thank you.", "Cool.", "Of course.", "Maybe.", "Blue.", "Ten.", "London.", "Hi.", "Goodbye.", "Please.",
           "Help.", "Correct."]
VOICES = ["en-gb", "en-us", "en-us+f3", "en-us+m3", "en-gb+f2"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_room_options(ap)
    args = ap.parse_args()
    rooms, seeds = rooms_and_seeds(ap, args)

    import torch

    torch.set_num_threads(1)
    from core.audio.room import NOMINAL_SPEECH_DBFS
    from core.harness.text import normalize
    from core.harness.user import cough
    from core.harness.voices import render
    from core.model.lite.asr import WhisperAsr
    from core.model.lite.turn import TurnConfig
    from core.speech_acts import is_nonlexical

    asr = WhisperAsr.load()
    threshold = TurnConfig().sound_margin
    groups: dict[str, dict] = {}
    dropped_replies: list[dict] = []
    for room, seed in each_room(rooms, seeds):
        items = [("sound", t, v) for t in SOUNDS for v in VOICES] + [("sound", "cough", k) for k in range(3)]
        items += [("reply", t, v) for t in REPLIES for v in VOICES]
        for kind, text, voice in items:
            if text == "cough":
                x = cough(0.3, NOMINAL_SPEECH_DBFS, seed=int(voice))
            else:
                x = render(text, voice=voice, speed=160, level_dbfs=NOMINAL_SPEECH_DBFS)
            sig = through_room(x, room, seed, tail=5000)
            r = asr.transcribe(sig, sound_margin=True)
            if not r.text or is_nonlexical(r.text):
                label = f"{kind}: no words or a sound by the vocabulary"
            elif kind == "sound":
                label = "sound heard as words"
            else:
                label = ("reply heard right" if normalize(text)[0] in normalize(r.text) else "reply misheard")
            g = groups.setdefault(label, {"count": 0, "taken_for_a_sound": 0})
            g["count"] += 1
            taken = r.sound_margin is not None and r.sound_margin < threshold
            g["taken_for_a_sound"] += int(taken)
            if taken and label == "reply heard right":
                dropped_replies.append({"said": text, "heard": r.text, "margin": round(r.sound_margin, 2),
                                        "voice": voice, "room": room, "seed": seed})
    print(json.dumps({"bench": "sound_margin", "threshold": threshold, "rooms": args.rooms, "seeds": args.seeds,
                      "groups": groups, "replies_heard_right_taken_for_a_sound": dropped_replies}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
