"""``log.jsonl``: one JSON record per finished epoch, kept consistent with the
checkpoint across crashes and resumes."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..atomic_file import atomic_write


class EpochLog:
    def __init__(self, path: Path):
        self.path = Path(path)

    def records(self) -> List[Dict[str, Any]]:
        """The complete records; a line torn by a crash (or that is not an
        epoch record at all) is skipped."""
        if not self.path.exists():
            return []
        records = []
        for line in self.path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and _is_epoch(record.get("epoch")):
                records.append(record)
        return records

    def start_fresh(self) -> None:
        self._rewrite([])

    def rewind(self, completed_epochs: int, last_record: Optional[Dict[str, Any]]) -> None:
        """Keep the records of the epochs the checkpoint holds, dropping those
        of epochs that will be rerun; restore the last one from the checkpoint
        when a crash came between saving it and logging it."""
        kept = [r for r in self.records() if r["epoch"] < completed_epochs]
        if last_record is not None and (not kept or kept[-1]["epoch"] != last_record["epoch"]):
            kept.append(last_record)
        self._rewrite(kept)

    def append(self, record: Dict[str, Any]) -> None:
        with self.path.open("a") as log:
            log.write(json.dumps(record) + "\n")

    def _rewrite(self, records: List[Dict[str, Any]]) -> None:
        with atomic_write(self.path, "w") as f:
            f.write("".join(json.dumps(r) + "\n" for r in records))


def _is_epoch(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
