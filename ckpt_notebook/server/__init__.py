"""The Jupyter server extension: the REST API under ``{base_url}ckpt-notebook/api/``
(:mod:`.handlers`, documented in docs/rest-api.md) and the dashboard under
``{base_url}ckpt-notebook/dashboard`` (:mod:`.dashboard`).

Loading it imports no torch and no panel: JupyterLab's start-up stays as fast as without it.
"""

from __future__ import annotations

import atexit
from typing import Any

__all__ = ["_load_jupyter_server_extension"]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Register the handlers on the server's tornado app (every one authenticated)."""
    from jupyter_server.utils import url_path_join

    from .dashboard import DASHBOARDS_SETTING, Dashboards, dashboard_handlers
    from .handlers import JOBS_SETTING, api_handlers
    from .jobs import Jobs

    web_app = serverapp.web_app
    base = url_path_join(web_app.settings["base_url"], "ckpt-notebook")
    jobs, dashboards = Jobs(), Dashboards()
    web_app.settings[JOBS_SETTING] = jobs
    web_app.settings[DASHBOARDS_SETTING] = dashboards
    atexit.register(dashboards.stop_all)
    atexit.register(jobs.shutdown)
    routes = [(url_path_join(base, "api", path), handler) for path, handler in api_handlers()]
    routes += [(url_path_join(base, path), handler) for path, handler in dashboard_handlers()]
    web_app.add_handlers(".*$", routes)
    serverapp.log.info("ckpt_notebook: REST API at %s", url_path_join(base, "api"))
