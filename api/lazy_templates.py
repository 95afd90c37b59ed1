"""A template engine that loads Jinja with the first page it renders.

An API process that only takes tasks (or a `localflow serve` nobody opens the dashboard of)
never renders a template; importing Jinja and Litestar's Jinja plugin at start-up cost it
~3 MB of memory (issue 10: the API's RSS). Litestar asks the engine for templates only when a
page is rendered, so the real engine is built there, once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from litestar.template import TemplateEngineProtocol

if TYPE_CHECKING:
    from litestar.plugins.jinja import JinjaTemplateEngine


class LazyJinja(TemplateEngineProtocol[Any, Mapping[str, Any]]):
    def __init__(
        self, directory: Path, configure: Callable[[JinjaTemplateEngine], None],
    ) -> None:
        self._directory = directory
        self._configure = configure
        self._callables: dict[str, Callable[..., Any]] = {}
        self._engine: JinjaTemplateEngine | None = None
        self._lock = threading.Lock()  # pages may render in Litestar's thread pool too

    @property
    def real(self) -> JinjaTemplateEngine:
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    from litestar.plugins.jinja import JinjaTemplateEngine

                    engine = JinjaTemplateEngine(directory=self._directory)
                    self._configure(engine)
                    for key, template_callable in self._callables.items():
                        engine.register_template_callable(key, template_callable)
                    self._engine = engine
        return self._engine

    def get_template(self, template_name: str) -> Any:
        return self.real.get_template(template_name)

    def render_string(self, template_string: str, context: Mapping[str, Any]) -> str:
        return self.real.render_string(template_string, context)

    def register_template_callable(self, key: str, template_callable: Any) -> None:
        if self._engine is not None:
            self._engine.register_template_callable(key, template_callable)
        else:
            self._callables[key] = template_callable
