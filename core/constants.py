"""Sample rates and frame sizes, named in one place.

Every buffer's rate is in its name (``*_16K``, ``*_24K``) or carried next to it.
"""

MODEL_INPUT_RATE = 16_000          # Hz: what the speech encoders, VAD and AEC work at
CHUNK_SAMPLES_16K = 2_560          # 160 ms: one listen step
CHUNK_SECONDS = CHUNK_SAMPLES_16K / MODEL_INPUT_RATE
AEC_FRAME_SAMPLES_16K = 160        # 10 ms: WebRTC APM frame
VAD_WINDOW_SAMPLES_16K = 512       # 32 ms: silero-vad window at 16 kHz
FREEZE_OMNI_OUTPUT_RATE = 24_000   # Hz: TiCodec output
CODEC_SAMPLES_PER_TOKEN_24K = 600  # 40 codec tokens per second

APP_NAME = "parley"
APP_AUTHOR = "Parley"
