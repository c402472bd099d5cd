import os, pytest

@pytest.fixture(scope="session", autouse=True)
def _offline_and_private_cache(tmp_path_factory):
    "Every test runs offline, with loranb's cache in a fresh folder."
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("LORANB_CACHE", str(tmp_path_factory.mktemp("loranb-cache")))
    os.environ.setdefault("MPLBACKEND", "Agg")
