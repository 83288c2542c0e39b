"""PEFT LoRA folder validation without torch: adapter_config.json + the safetensors header.

The registry must refuse a broken adapter before storing it, and must do so without importing torch
(6 s). A safetensors file is an 8-byte little-endian header length, a JSON header (dtype, shape and
byte offsets per tensor, plus string metadata), then the raw bytes, so truncation, wrong shapes,
non-LoRA tensors and NaN/inf can all be found here with the standard library and numpy.
`adapter_hub.adapter.LoraAdapter.load` runs the same checks before reading tensors with torch.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry.errors import AdapterFormatError, NonFiniteError

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PICKLE_FILE = "adapter_model.bin"
EXPORT_MANIFEST = "adapter_hub_export.json"  # written by `export`, read by `import`; not part of the adapter
KEY_PREFIX = "base_model.model."
KEY_RE = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<which>[AB])\.weight$")
META_IDENTITY = "adapter_hub.base_model"
META_PROVENANCE = "adapter_hub.provenance"
MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header
# What a file of a version may be called: one plain path component that the database (UTF-8 text) and
# every filesystem store as it is. registry.store refuses other names read back from the database.
FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,254}")

_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                "F8_E4M3": 1, "F8_E5M2": 1}
_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}


@dataclass
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    start: int  # byte offsets within the data section
    end: int


@dataclass
class Header:
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    data_offset: int  # where the data section starts in the file


@dataclass
class FolderInfo:
    """What the registry records about an adapter folder."""

    files: list[str]  # file names to store (sorted)
    config: dict[str, Any]
    ranks: dict[str, int]  # module -> rank
    shapes: dict[str, tuple[int, int]]  # module -> (in, out)
    base_model: str | None = None
    base_fingerprint: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    size_bytes: int = 0

    @property
    def rank(self) -> int:
        return max(self.ranks.values())

    @property
    def alpha(self) -> float:
        return float(self.config.get("lora_alpha") or 8)

    @property
    def target_modules(self) -> list[str]:
        return sorted(self.ranks)


def read_config(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdapterFormatError(f"{path}: not valid JSON ({exc})")
    except OSError as exc:
        raise AdapterFormatError(f"{path}: unreadable ({exc})")
    if not isinstance(raw, dict):
        raise AdapterFormatError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    peft_type = raw.get("peft_type", "LORA")
    if str(peft_type).upper() != "LORA":
        raise AdapterFormatError(f"{path}: peft_type is {peft_type!r}; only LORA adapters are supported")
    if raw.get("use_dora"):
        raise AdapterFormatError(f"{path}: DoRA adapters (use_dora=true) are not supported")
    check_init(path, raw.get("init_lora_weights", True))
    if raw.get("alora_invocation_tokens"):
        raise AdapterFormatError(f"{path}: alora_invocation_tokens is set: an activated LoRA (aLoRA) acts only after "
                                 f"its invocation tokens, which adapter-hub does not implement; refusing to load it "
                                 f"as a plain LoRA")
    for key in ("r", "lora_alpha"):
        value = raw.get(key)
        if key == "lora_alpha" and value is None:
            continue  # PEFT's default alpha is 8
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise AdapterFormatError(f"{path}: {key} must be a positive number, got {value!r}")
    for key in ("rank_pattern", "alpha_pattern"):
        if raw.get(key) is not None and not isinstance(raw[key], dict):
            raise AdapterFormatError(f"{path}: {key} must be an object, got {type(raw[key]).__name__}")
    return raw


# Initialisations after which the saved factors are a plain ΔW on the untouched base (B·A added to W).
PLAIN_INITS = (True, False, "gaussian", "eva", "orthogonal")
# Initialisations that change the base weights themselves (W ← W − s·B₀·A₀): the factors are only
# meaningful on that modified base, until PEFT converts them to a plain LoRA.
BASE_CHANGING_INITS = ("pissa", "olora", "corda")


def check_init(path: Path, init: Any) -> None:
    """Refuse adapters whose factors do not mean ΔW = s·B·A on the base model as published."""
    if init in PLAIN_INITS:
        return
    text = str(init)
    if any(text == kind or text.startswith(f"{kind}_") for kind in BASE_CHANGING_INITS):
        raise AdapterFormatError(
            f"{path}: init_lora_weights is {init!r}: its factors assume a base model modified at initialisation, so "
            f"on the published base they are wrong. Convert it to a plain LoRA with PEFT first: "
            f"model.save_pretrained(DIR, path_initial_model_for_weight_conversion=INITIAL_ADAPTER_DIR) "
            f"(the result has init_lora_weights true)")
    if text == "loftq":
        raise AdapterFormatError(f"{path}: init_lora_weights is 'loftq': its factors pair with a quantised base "
                                 f"model's residual, which adapter-hub does not reproduce; not supported")
    raise AdapterFormatError(f"{path}: init_lora_weights is {init!r}, which adapter-hub does not know to be a plain "
                             f"LoRA (known: {', '.join(map(repr, PLAIN_INITS))}); not supported")


def read_header(path: Path) -> Header:
    """Parse and check a safetensors header against the file's real size (truncation shows here)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise AdapterFormatError(f"{path}: unreadable or truncated safetensors file ({size} bytes)")
            (n,) = struct.unpack("<Q", prefix)
            if n > MAX_HEADER or 8 + n > size:
                raise AdapterFormatError(f"{path}: unreadable or truncated safetensors file (header of {n} bytes "
                                         f"in a {size}-byte file)")
            header = json.loads(fh.read(n))
    except OSError as exc:
        raise AdapterFormatError(f"{path}: unreadable ({exc})")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdapterFormatError(f"{path}: unreadable or truncated safetensors file (bad header: {exc})")
    if not isinstance(header, dict):
        raise AdapterFormatError(f"{path}: unreadable safetensors header")
    metadata = header.pop("__metadata__", None) or {}
    tensors, data_size = {}, size - 8 - n
    covered = 0
    for key, info in header.items():
        try:
            dtype, shape, (start, end) = info["dtype"], tuple(int(d) for d in info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise AdapterFormatError(f"{path}: malformed safetensors entry for {key!r}")
        if dtype not in _DTYPE_BYTES:
            raise AdapterFormatError(f"{path}: tensor {key!r} has unsupported dtype {dtype}")
        expected = _DTYPE_BYTES[dtype] * math.prod(shape)
        if not (0 <= start <= end) or end - start != expected:
            raise AdapterFormatError(f"{path}: tensor {key!r} byte range does not match its shape {list(shape)}")
        if end > data_size:
            raise AdapterFormatError(f"{path}: unreadable or truncated safetensors file ({key!r} ends at byte "
                                     f"{end} of a {data_size}-byte data section)")
        covered += end - start
        tensors[key] = TensorInfo(dtype, shape, start, end)
    if covered != data_size:
        raise AdapterFormatError(f"{path}: unreadable or truncated safetensors file (data section is {data_size} "
                                 f"bytes, tensors cover {covered})")
    return Header(tensors, {str(k): str(v) for k, v in metadata.items()}, 8 + n)


def lora_modules(header: Header, where: str) -> dict[str, tuple[str, str]]:
    """module -> (lora_A key, lora_B key), checking names, pairs and shapes."""
    return pair_lora_keys({key: info.shape for key, info in header.tensors.items()}, where)


def pair_lora_keys(shapes: Mapping[str, tuple[int, ...]], where: str) -> dict[str, tuple[str, str]]:
    """module -> (lora_A key, lora_B key) from tensor names and shapes (a header's or loaded tensors')."""
    pairs: dict[str, dict[str, str]] = {}
    for key in shapes:
        m = KEY_RE.match(key)
        if m is None:
            raise AdapterFormatError(
                f"{where}: unsupported tensor {key!r} (only lora_A/lora_B weights of linear layers are supported; "
                f"no biases, embeddings, DoRA magnitudes or modules_to_save)"
            )
        pairs.setdefault(m["module"], {})[m["which"]] = key
    if not pairs:
        raise AdapterFormatError(f"{where}: the weights file holds no LoRA tensors")
    out = {}
    for module, ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"}:
            raise AdapterFormatError(f"{where}: module {module} has no {'lora_B' if 'A' in ab else 'lora_A'} tensor")
        check_pair_shapes(module, shapes[ab["A"]], shapes[ab["B"]], where)
        out[module] = (ab["A"], ab["B"])
    return out


def check_pair_shapes(module: str, a: tuple[int, ...], b: tuple[int, ...], where: str = "") -> None:
    prefix = f"{where}: " if where else ""
    if len(a) != 2 or len(b) != 2:
        raise AdapterFormatError(f"{prefix}{module}: lora_A and lora_B must be matrices, got {list(a)} and {list(b)}")
    if a[0] != b[1]:
        raise AdapterFormatError(f"{prefix}{module}: lora_A is {tuple(a)} (r×in) but lora_B is {tuple(b)} (out×r): "
                                 f"ranks differ")
    if a[0] == 0:
        raise AdapterFormatError(f"{prefix}{module}: rank 0 factors")


def pattern_value(pattern: Mapping[str, Any], module: str, default: Any) -> Any:
    """A rank_pattern/alpha_pattern lookup exactly as PEFT does it (peft.utils.other.get_pattern_key):
    the FIRST key, in the pattern's own order, that matches the end of the module name as a regex at a
    dot boundary — an exact name listed after a broader regex does not win."""
    for key, value in pattern.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def rank_for(config: dict[str, Any], module: str) -> int:
    return int(pattern_value(config.get("rank_pattern") or {}, module, config["r"]))


def check_finite(path: Path, header: Header, keys: list[str] | None = None) -> None:
    """Raise NonFiniteError naming the first tensor holding NaN/inf (numpy; no torch)."""
    import numpy as np

    with open(path, "rb") as fh:
        for key in keys or list(header.tensors):
            info = header.tensors[key]
            if info.dtype not in _FLOAT_DTYPES:
                continue
            fh.seek(header.data_offset + info.start)
            raw = fh.read(info.end - info.start)
            if info.dtype == "BF16":  # numpy has no bf16: all-ones exponent bits mean inf or NaN
                bad = ((np.frombuffer(raw, dtype="<u2") & 0x7F80) == 0x7F80).any()
            else:
                bad = not np.isfinite(np.frombuffer(raw, dtype={"F64": "<f8", "F32": "<f4", "F16": "<f2"}[info.dtype])).all()
            if bad:
                raise NonFiniteError(f"{path}: {key} contains NaN or inf")


# What `export` writes in its manifest and `import` reads back, each key's type (all optional).
MANIFEST_KEYS = {"ref": str, "registry": str, "digest": str, "note": str, "base_model": str, "exported_at": str,
                 "metadata": dict, "tags": dict}


def read_manifest(path: Path) -> dict[str, Any]:
    """An export manifest, checked: a JSON object whose known keys have their types; AdapterFormatError
    naming the file (and the key) otherwise."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdapterFormatError(f"{path}: not a valid export manifest (not JSON: {exc})")
    if not isinstance(manifest, dict):
        raise AdapterFormatError(f"{path}: not a valid export manifest (a JSON {type(manifest).__name__}, expected "
                                 f"an object); remove it to import the folder as a plain PEFT adapter")
    for key, kind in MANIFEST_KEYS.items():
        if manifest.get(key) is not None and not isinstance(manifest[key], kind):
            raise AdapterFormatError(f"{path}: {key} must be a {'JSON object' if kind is dict else 'string'}, got "
                                     f"{type(manifest[key]).__name__}")
    return manifest


def _check_entry_name(folder: Path, name: str) -> None:
    """Refuse, before anything is stored, a file whose name cannot be stored as a version's file: not
    valid UTF-8 (os.listdir gives such names with surrogate escapes) or not a plain name."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raw = os.fsencode(name)
        raise AdapterFormatError(f"{folder}: the file name {raw!r} is not valid UTF-8; rename or remove that file")
    if not name.startswith(".") and (not FILE_NAME.fullmatch(name) or ".." in name):
        raise AdapterFormatError(f"{folder}: the file name {name!r} cannot be stored (an adapter's files need plain "
                                 f"names of letters, digits and ._+-); rename or remove that file")


def inspect_folder(folder: str | Path, *, allow_bin: bool = False) -> FolderInfo:
    """Validate a PEFT LoRA folder and describe it; AdapterFormatError names the first problem."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AdapterFormatError(f"{folder}: not a folder (an adapter is a folder with {CONFIG_FILE})")
    for entry in folder.iterdir():  # a link could point anywhere (README -> /etc/passwd): never followed
        _check_entry_name(folder, entry.name)
        if entry.is_symlink():
            raise AdapterFormatError(f"{folder}: {entry.name} is a symbolic link; an adapter folder must hold "
                                     f"regular files only (copy the file in instead)")
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise AdapterFormatError(f"{folder}: no {CONFIG_FILE}; this is not a LoRA adapter folder")
    config = read_config(config_path)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        if (folder / PICKLE_FILE).is_file():
            if not allow_bin:
                raise AdapterFormatError(
                    f"{folder / PICKLE_FILE}: pickle weights are refused (unpickling can run code). Re-save the "
                    f"adapter as safetensors, or pass allow_bin=True / --allow-bin to read it with "
                    f"torch.load(weights_only=True)"
                )
            return FolderInfo(files=[], config=config, ranks={}, shapes={})  # caller converts it first
        raise AdapterFormatError(f"{folder}: no {WEIGHTS_FILE} (nor {PICKLE_FILE})")
    header = read_header(weights)
    modules = lora_modules(header, str(folder))
    ranks, shapes = {}, {}
    for module, (a_key, b_key) in modules.items():
        for key in (a_key, b_key):
            if header.tensors[key].dtype not in _FLOAT_DTYPES:
                raise AdapterFormatError(f"{weights}: {key} has dtype {header.tensors[key].dtype}; LoRA factors must "
                                         f"be floating point ({', '.join(sorted(_FLOAT_DTYPES))})")
        a, b = header.tensors[a_key].shape, header.tensors[b_key].shape
        expected = rank_for(config, module)
        if a[0] != expected:
            raise AdapterFormatError(f"{config_path}: {module} has rank {a[0]} in the weights but {expected} in the config")
        ranks[module], shapes[module] = a[0], (a[1], b[0])
    check_finite(weights, header)
    files, size = [], 0
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.name == EXPORT_MANIFEST:
            continue
        if entry.is_dir():
            raise AdapterFormatError(f"{folder}: contains a sub-folder {entry.name!r}; register each adapter folder "
                                     f"on its own")
        if entry.is_file():
            files.append(entry.name)
            size += entry.stat().st_size
    identity: dict[str, Any] = {}
    if META_IDENTITY in header.metadata:
        try:
            identity = json.loads(header.metadata[META_IDENTITY])
        except json.JSONDecodeError as exc:
            raise AdapterFormatError(f"{weights}: malformed base-model identity in metadata ({exc})")
    provenance = {}
    if META_PROVENANCE in header.metadata:
        try:
            provenance = json.loads(header.metadata[META_PROVENANCE])
        except json.JSONDecodeError as exc:
            raise AdapterFormatError(f"{weights}: malformed provenance in metadata ({exc})")
    return FolderInfo(
        files=files, config=config, ranks=ranks, shapes=shapes,
        base_model=identity.get("name") or config.get("base_model_name_or_path"),
        base_fingerprint=identity.get("fingerprint"), provenance=provenance, size_bytes=size,
    )
