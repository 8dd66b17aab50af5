"""A name -> component table, one per kind of component (models, losses, data sources).

Components register themselves where they are defined (`@MODELS.register("cnn")`); a package's
`__init__` imports its light modules so that they do. A module that needs a heavy or optional
library (torchvision's model zoo, transformers, audio) is registered lazily instead: its names
are listed with the module that defines them (`register_lazy`), and the module is imported only
when one of its components is first looked up, so neither the command's start-up nor runs that
never use it pay for the library.
"""

from __future__ import annotations

import importlib
from typing import Any, Iterator

from kdrun.errors import ConfigError


class Registry:
    def __init__(self, kind: str, key: str):
        self.kind = kind  # "model", "loss", "data source"
        self.key = key  # the config key that names an entry, for error messages ("data.source")
        self._entries: dict[str, Any] = {}
        self._info: dict[str, dict] = {}
        self._lazy: dict[str, str] = {}  # name -> the module that registers it when imported

    def register(self, name: str, **info):
        """Decorator: register the decorated object under `name`, with optional metadata `info`."""
        def add(entry):
            self._entries[name] = entry
            self._info[name] = info
            self._lazy.pop(name, None)
            return entry

        return add

    def register_lazy(self, names, module: str) -> None:
        """`names` are defined in `module`, which registers them when it is imported."""
        for name in names:
            self._lazy.setdefault(name, module)

    def names(self) -> list[str]:
        return sorted({*self._entries, *self._lazy})

    def __contains__(self, name) -> bool:
        return name in self._entries or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def get(self, name: str, key: str | None = None):
        """The entry `name`, importing its module first when it is lazy; ConfigError naming `key` if unknown."""
        if name not in self._entries and name in self._lazy:
            importlib.import_module(self._lazy[name])
        if name not in self._entries:
            raise ConfigError(f"{key or self.key}={name!r} is unknown; allowed: {', '.join(self.names())}")
        return self._entries[name]

    def __getitem__(self, name: str):
        return self.get(name)

    def info(self, name: str) -> dict:
        self.get(name)
        return self._info[name]

    def is_loaded(self, name: str) -> bool:
        """Whether `name`'s module has been imported (a lazy entry not yet looked up is not)."""
        return name in self._entries
