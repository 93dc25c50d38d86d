"""Engine settings: turn-taking, barge-in, playback lead, early speech and multi-turn memory.

All times are seconds. ``EngineConfig.from_dict`` ignores unknown keys (with a warning) so an old settings file
never stops the engine.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class EarlySpeech:
    """Start speaking early: cut the first speech segment at the first clause boundary (``,`` ``;`` ``:`` ...) or
    after ``first_segment_max_tokens`` LLM tokens, and decode the first codec window with
    ``first_codec_chunk`` tokens (Freeze-Omni's ``decoder_first_chunk_size``, 20 in server.json vs 40 later).

    The engine hands these to the backend when it is built (see ``core.engine.profiles``); a profile that lacks a
    knob ignores it and the engine logs which ones were applied.
    """

    enabled: bool = True
    first_segment_max_tokens: int = 12
    first_codec_chunk: int = 20
    codec_chunk: int = 40


@dataclass
class EngineConfig:
    # --- listening / turn-taking ------------------------------------------------------------------------------
    # A VAD speech probability at or above this marks a 32 ms window as voiced (end-of-speech time for latency,
    # voiced duration of a barge-in candidate).
    voiced_prob: float = 0.5
    # After the VAD's offset, how long the input stays open waiting for the backend's decision. Then, when no answer
    # is running, the backend is asked for its final decision (end_of_input); during an answer the candidate is
    # dropped ("el", the answer goes on): only a live 'ss' interrupts.
    silence_timeout_s: float = 1.5
    # A user turn longer than this is closed with end_of_input (the backend answers or not).
    max_turn_s: float = 30.0
    # A barge-in ('ss' while an answer is playing or being prepared) needs at least this much voiced audio in the
    # candidate turn; shorter ones (a cough, "mm-hm") are treated as 'el' and the answer goes on.
    barge_in_min_voiced_s: float = 0.3
    # ... and, when the profile gives a transcript (Lite), it must not be a backchannel and needs at least this many
    # content words (core.speech_acts: "mm-hm", "yeah", "okay", "I see" have none; a command such as "stop" or
    # "wait" alone is enough). 0: any non-backchannel.
    barge_in_min_words: int = 2
    # Without a command, a barge-in with fewer than ``barge_in_early_words`` distinct content words needs this much
    # voiced audio: backchannels last up to about a second ("mm-hm", laughter), and Whisper makes a word or two of
    # one with the residual echo around it ("in the next year.", "They make me a chair."). Three content words are
    # a question ("What is 2 plus 2?", credited by the VAD with 0.9 s of voice over the echo).
    barge_in_content_voiced_s: float = 1.0
    # The answer is cut before the user has finished only for a long utterance: this many distinct content words of
    # the user's own and ``barge_in_early_voiced_s`` of voiced audio. Otherwise the answer stays held (silent) and
    # the decision waits for the end of the user's speech, when the transcript is whole: a command heard in a
    # partial transcript of a hum ("mm-hm" -> "No, no") must not cut the answer.
    barge_in_early_words: int = 3
    barge_in_early_voiced_s: float = 1.5
    # The answer's playback is held as soon as a candidate has this much voiced audio (0: at its onset, which the
    # echo-aware VAD already checked), and plays on when the candidate is not a barge-in (the user hears the
    # assistant stop at once; a backchannel or a cough costs a short gap).
    pause_voiced_s: float = 0.0
    # With ``pause_voiced_s`` 0, the capture chain holds the answer the moment its VAD decides an onset over it
    # (``Engine.hold_for_onset``, from the audio thread), not when the onset's 160 ms chunk reaches the engine:
    # the answer stops up to a chunk (and any queue wait) sooner. The engine then owns that hold like its own
    # pause, or lets the answer play on when the onset opened no candidate. False: the chunk's turn only.
    hold_on_onset: bool = True
    # A command ("stop", "wait") interrupts with this much voiced audio (three VAD windows): short words, and the
    # echo canceller takes part of the user's voice during double talk. Over the laptop room's echo the VAD credited
    # a spoken "Wait." with 128-192 ms, and 0.2 s dropped it; the transcript, a command alone, is the evidence.
    barge_in_command_voiced_s: float = 0.09
    # A transcript with more words than this many per second of voiced audio (plus one) did not come from the
    # user's voice alone: Whisper made sentences of a short sound and the residual echo around it ("mm-hm" heard
    # as "You're gonna be here."). Its content words do not interrupt (a command still does). Speech runs at 2-4
    # words per second.
    barge_in_max_words_per_s: float = 5.0
    # Without a command, a barge-in whose transcript the recogniser was this unsure of (mean token log-probability,
    # when the profile gives one: Lite's Whisper) is not one: over the assistant's echo Whisper turns a hum, a cough
    # or a laugh into words ("MMA Kim", "And then my chin, the zoom."; -1.2 to -3.7 in the conversation suite),
    # while the questions users barged in with measured -0.3 to -1.4 there (commands are exempt: a lone "Wait."
    # measured -1.6 to -2.8).
    barge_in_min_logprob: float = -1.5
    # Speech that resumes within this long after the end of the user's speech, while at most ``join_max_played_s``
    # of the answer has been heard, continues the same turn (the user only paused): the answer is dropped and
    # restarts afterwards with the whole utterance.
    join_window_s: float = 2.5
    join_max_played_s: float = 1.0
    # When the user resumed is judged from the voiced windows that lead up to the VAD's onset without a gap longer
    # than this: over the start of an answer the onset can come a second after the user resumed (the windows
    # already heard them, the onset's echo checks did not yet). 0: from the onset alone.
    join_lookback_gap_s: float = 0.4
    # A candidate judged not a barge-in at a pause inside the user's speech is not the end of it: "Stop. [pause]
    # What is two plus two?" is judged on "Stop." ("It's not.", too short) when the user pauses after it. While
    # the user still speaks, or if they resume within ``candidate_grace_s`` of the end of their speech (the answer
    # stays held meanwhile), the whole candidate, the earlier part included, is listened to again as one (at most
    # ``candidate_continuations`` times). A backchannel the user stopped after ("okay", "mm-hm") plays on at once,
    # as before. The pause after "Stop." measured 0.5-0.7 s in the rooms. Once the user has stopped, this holds only
    # for a short first part (``candidate_grace_max_voiced_s`` of voice: a word, "Stop."): two backchannels a second
    # apart, the first misheard as words ("In my mid chain." + "ok"), must not make one barge-in.
    candidate_grace_s: float = 1.0
    candidate_grace_max_voiced_s: float = 0.5
    candidate_continuations: int = 2
    # After the assistant stops playing it still counts as audible this long (its echo dies away).
    echo_tail_s: float = 0.25
    # A new turn's audio starts this long before the VAD's onset (the first syllable is never lost).
    pre_roll_s: float = 0.5
    # --- speaking -------------------------------------------------------------------------------------------------
    # Speak steps run only while less than this much audio is queued for playback: enough lead that playback never
    # starves, little enough that an interruption wastes little generation.
    playback_lead_s: float = 2.0
    # A reply iterator that yields this many pieces without audio... is allowed; a single speak step that takes
    # longer than this (wall clock) is reported as a warning (it delayed listening).
    slow_step_warn_s: float = 0.5
    # --- multi-turn memory ----------------------------------------------------------------------------------------
    # When Conversation.context_tokens reaches ``rebuild_at`` x ``max_context_tokens`` (checked when the engine is
    # idle between turns), the context is rebuilt from the system prompt plus the most recent turns as text.
    max_context_tokens: int = 4096
    rebuild_at: float = 0.8
    # The rebuilt context aims at no more than this fraction of the limit (older turns are dropped to fit).
    rebuild_target: float = 0.4
    # Turns of text history the engine keeps (for rebuilds and the UI); older ones are forgotten.
    history_turns: int = 64
    # --- file mode -----------------------------------------------------------------------------------------------
    # After the input file ends, keep the clock running (silence) at most this long for the answer to finish.
    drain_limit_s: float = 120.0
    early: EarlySpeech = dataclasses.field(default_factory=EarlySpeech)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "EngineConfig":
        cfg = cls()
        for key, value in (d or {}).items():
            if key == "early" and isinstance(value, dict):
                for k, v in value.items():
                    if hasattr(cfg.early, k):
                        setattr(cfg.early, k, type(getattr(cfg.early, k))(v))
                    else:
                        log.warning("unknown early-speech setting %r ignored", k)
            elif hasattr(cfg, key) and key != "early":
                setattr(cfg, key, type(getattr(cfg, key))(value))
            else:
                log.warning("unknown engine setting %r ignored", key)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
