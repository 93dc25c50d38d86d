"""Settings: one JSON file under the platform config dir, a validated dataclass schema, model file registry.

No Qt here: the app and the headless commands share it.
"""

from core.settings.schema import (
    PRECISIONS,
    PROFILES,
    AudioSettings,
    HistorySettings,
    ModelSettings,
    PersonaSettings,
    RecordingSettings,
    SamplingSettings,
    Settings,
    UiSettings,
    VadSettings,
)
from core.settings.store import LoadResult, config_dir, load_settings, save_settings, settings_path

__all__ = [
    "PRECISIONS", "PROFILES", "AudioSettings", "HistorySettings", "ModelSettings", "PersonaSettings", "RecordingSettings",
    "SamplingSettings", "Settings", "UiSettings", "VadSettings", "LoadResult", "config_dir", "load_settings",
    "save_settings", "settings_path",
]
