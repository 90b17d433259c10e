"""Rows from a Hugging Face `datasets` dataset for `store ingest --from-hf`: a folder written by
`save_to_disk`, a local folder or file of data files (Parquet, JSON, CSV), or a hub id (for users
with a network). Columns are renamed by a mapping (`prompt=question,answer=answer`); unmapped
columns are dropped. The dataset's split names the rows' `split` (train -> train, test -> test,
validation/dev -> heldout) unless the mapping sets it. Validation is the store's, as for files:
a bad row is quarantined with its reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reasonloop.storage.ingest import IngestError

SPLIT_OF = {"train": "train", "test": "test", "validation": "heldout", "valid": "heldout", "dev": "heldout"}


def parse_mapping(text: str, option: str = "--map") -> dict[str, str]:
    """'prompt=question,answer=answer' -> {"prompt": "question", "answer": "answer"} (table column ->
    dataset column, or -> a value for `--set`)."""
    mapping = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        target, eq, source = part.partition("=")
        if not eq or not target.strip() or not source.strip():
            raise IngestError(f"{option} entry {part!r} is not table_column=value")
        mapping[target.strip()] = source.strip()
    if not mapping:
        raise IngestError(f"{option} names no column (e.g. --map prompt=question,answer=answer)")
    return mapping


def _load(path_or_id: str, split: str) -> Any:
    import datasets

    path = Path(path_or_id)
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        data = datasets.load_from_disk(str(path))
    elif path.is_file():
        kind = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}.get(path.suffix)
        if kind is None:
            raise IngestError(f"{path}: not a Parquet, JSON or CSV file")
        data = datasets.load_dataset(kind, data_files={split: str(path)})
    else:
        data = datasets.load_dataset(path_or_id)  # a folder of data files, or a hub id
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise IngestError(f"{path_or_id} has no split {split!r}; splits: {', '.join(data)}")
        data = data[split]
    return data


def hf_rows(path_or_id: str, split: str, mapping: dict[str, str]) -> list[dict]:
    """The dataset's rows under the table's column names."""
    try:
        data = _load(path_or_id, split)
    except (OSError, ValueError, FileNotFoundError) as exc:
        raise IngestError(f"cannot load dataset {path_or_id!r}: {exc}") from exc
    missing = sorted(set(mapping.values()) - set(data.column_names))
    if missing:
        raise IngestError(f"dataset has no column {', '.join(missing)}; columns: {', '.join(data.column_names)}")
    ours = SPLIT_OF.get(split, "train")
    return [{"split": ours} | {t: record[s] for t, s in mapping.items()} for record in data]
