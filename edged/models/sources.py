"""Where a job's user model may come from: allow-listed factories and files inside one models directory.

A job's `model` field is user input that the worker acts on: a `module:factory` spec runs code, a path
reads files. So the daemon only accepts

- `module:factory` specs on the operator's allow-list (EDGED_MODEL_FACTORIES): an entry `pkg.mod:make`
  allows exactly that factory, an entry `pkg` (no colon) allows every factory of `pkg` and its
  submodules (`pkg:f`, `pkg.sub:f`, not `pkgx:f`);
- model files (transformers directories, factory weights) inside EDGED_MODELS_DIR, named relative to
  it or by an absolute path inside it. A path outside it is refused with the same message whether or
  not it exists, so the field cannot probe the file system. `~` is not expanded (the daemon's home is
  not the user's).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edged.errors import InvalidInput, quoted

FACTORIES_SETTING = "EDGED_MODEL_FACTORIES"
MODELS_DIR_SETTING = "EDGED_MODELS_DIR"


@dataclass(frozen=True)
class ModelSources:
    factories: tuple[str, ...]  # allow-list entries: "module:factory" or a module prefix "pkg.mod"
    models_dir: Path  # absolute, normalised

    @classmethod
    def from_settings(cls, settings: Any) -> "ModelSources":
        return cls(tuple(settings.model_factories), Path(os.path.abspath(settings.resolved_models_dir)))

    def allows_factory(self, module: str, factory: str) -> bool:
        for entry in self.factories:
            if ":" in entry:
                if entry == f"{module}:{factory}":
                    return True
            elif module == entry or module.startswith(entry + "."):
                return True
        return False

    def check_factory(self, module: str, factory: str) -> None:
        """InvalidInput unless `module:factory` is on the allow-list."""
        if not self.allows_factory(module, factory):
            allowed = ", ".join(self.factories) if self.factories else "none: the list is empty"
            raise InvalidInput(
                f"model factory {module}:{factory} is not allowed; the daemon runs only the factories listed in "
                f"{FACTORIES_SETTING} (now: {allowed}); ask the operator to add it, or use a registered model",
                detail={"setting": FACTORIES_SETTING, "allowed": list(self.factories)},
            )

    def resolve_path(self, given: str) -> Path:
        """The model file or directory `given` names, which must lie inside the models directory.

        Normalised lexically ('..' cannot climb out); links the operator placed inside are followed.
        The answer does not depend on whether the path exists.
        """
        if given.startswith("~"):
            raise InvalidInput(
                f"model path {quoted(given)} starts with '~', which is not expanded; "
                f"{self._accepted_paths()}",
                detail={"setting": MODELS_DIR_SETTING, "models_dir": str(self.models_dir)},
            )
        path = Path(os.path.normpath(self.models_dir / given))  # an absolute `given` replaces models_dir
        if path != self.models_dir and self.models_dir not in path.parents:
            raise InvalidInput(
                f"model path {quoted(given)} is outside the models directory; {self._accepted_paths()}",
                detail={"setting": MODELS_DIR_SETTING, "models_dir": str(self.models_dir)},
            )
        return path

    def _accepted_paths(self) -> str:
        return (f"accepted are paths relative to {MODELS_DIR_SETTING} ({self.models_dir}) "
                "or absolute paths inside it")

