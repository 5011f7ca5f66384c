"""Two writers racing for one checkpoint name, each with its own store client (like two
machines), both past the up-front name check and meeting at the commit."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ckpt_notebook.manager.copying import copy
from ckpt_notebook.storage import Store


def race_for_a_name(open_store: Callable[[], Store], folders: Sequence[Path],
                    name: str = "release") -> tuple[list[int], list[BaseException]]:
    """Copy ``folders[i]`` to ``name`` from two threads at once; returns the indexes of the
    writers that won and the errors of those that lost."""
    barrier = threading.Barrier(len(folders), timeout=30)
    outcomes: dict[int, Any] = {}

    def writer(i: int) -> None:
        store = open_store()
        commit = store.commit

        def racing_commit(*args: Any, **kwargs: Any) -> None:
            barrier.wait()  # both have checked the name: now they race for it
            commit(*args, **kwargs)

        store.commit = racing_commit  # type: ignore[method-assign]
        try:
            outcomes[i] = copy(str(folders[i]), name, to=store)
        except Exception as err:
            outcomes[i] = err

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(len(folders))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    won = [i for i, o in outcomes.items() if not isinstance(o, BaseException)]
    lost = [o for o in outcomes.values() if isinstance(o, BaseException)]
    return won, lost
