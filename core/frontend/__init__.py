"""Speech front-end: Kaldi-compatible fbank, CMVN statistics, and the chunked streaming front-end."""

from core.frontend.chunker import FrontendState, StreamingFbank, pad_to_chunks
from core.frontend.cmvn import CmvnError, CmvnStats, load_cmvn, parse_json_cmvn, parse_kaldi_cmvn
from core.frontend.fbank import FbankOptions, fbank, mel_banks

__all__ = [
    "CmvnError", "CmvnStats", "FbankOptions", "FrontendState", "StreamingFbank", "fbank", "load_cmvn",
    "mel_banks", "pad_to_chunks", "parse_json_cmvn", "parse_kaldi_cmvn",
]
