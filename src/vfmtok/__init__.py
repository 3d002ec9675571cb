"""vfmtok: visual tokenizers on frozen vision foundation models + autoregressive generation."""

from vfmtok.utils.errors import VFMTokError  # noqa: F401
from vfmtok.utils.version import __version__  # noqa: F401


def __getattr__(name: str):
    # Lazy so that `import vfmtok` stays cheap and the CLI starts fast.
    if name in ("VFMTokenizer", "load_tokenizer"):
        from vfmtok.tokenizer import api

        return getattr(api, name)
    if name == "GPT":
        from vfmtok.generator.gpt import GPT

        return GPT
    if name == "RAR":
        from vfmtok.generator.rar import RAR

        return RAR
    if name == "load_generator":
        from vfmtok.generator.checkpoint import load_generator

        return load_generator
    raise AttributeError(name)
