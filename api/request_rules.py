"""Checks every /api request passes before its handler (the controllers' before_request).

- A query parameter the operation does not declare is a 400 naming it and the ones it knows
  (`POST /api/tasks?wiat=30`): ignored, a typo would read as obeyed (an immediate 201 to a
  caller who thinks it waited). The known names are the ones Litestar itself reads for the
  handler (its KwargsModel, built once per route at start-up), so the rule, the handler and the
  OpenAPI document cannot disagree; a parameter a handler reads by hand from
  `request.query_params` must be declared in its signature too.
- A query parameter given twice (`?status=queued&status=failed`) is a 400: Litestar would keep
  one of the values and silently drop the other, so the answer would not be what was asked.
  A parameter declared as a list (`/api/events?task=A&task=B`) is meant to repeat.
- A conditional header the operation would ignore is a 400 (api/conditional.py).

OPTIONS is left alone: it asks what the path allows, whatever query the caller means to send.
"""

from __future__ import annotations

from dataclasses import dataclass

from litestar import Litestar, Request
from litestar.exceptions import ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute

from api.conditional import refuse_unhonoured

# Names in one refusal (each is one `errors` entry), and the characters shown of each: a
# query string full of made-up names must not make an answer as big as itself.
MAX_NAMED = 10
MAX_NAME_SHOWN = 64
_STATE_KEY = "query_rules"


@dataclass(frozen=True, slots=True)
class QueryRule:
    """What one operation takes in its query string."""

    known: frozenset[str]
    repeatable: frozenset[str]  # declared as lists

    def listing(self) -> str:
        return ", ".join(sorted(self.known)) or "none"


def query_rules(app: Litestar) -> dict[HTTPRouteHandler, QueryRule]:
    """Every HTTP handler's rule, from the KwargsModel Litestar built for it (the same one
    that turns the query string into the handler's arguments, dependencies' included)."""
    rules: dict[HTTPRouteHandler, QueryRule] = {}
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler, kwargs_model in route.route_handler_map.values():
            rules[handler] = QueryRule(
                known=frozenset(p.field_alias for p in kwargs_model.expected_query_params),
                repeatable=frozenset(kwargs_model.sequence_query_parameter_names),
            )
    return rules


def rule_of(request: Request) -> QueryRule:
    # Built once per app, on the first request that has a query string (as write_lock in
    # api/conditional.py): a dictionary look-up per such request after that.
    state = request.app.state
    rules = state.get(_STATE_KEY)
    rule = rules.get(request.route_handler) if rules is not None else None
    if rule is None:  # first use, or a route registered since (Litestar.register)
        rules = state[_STATE_KEY] = query_rules(request.app)
        rule = rules[request.route_handler]
    return rule


def _shown(name: str) -> str:
    return name if len(name) <= MAX_NAME_SHOWN else name[:MAX_NAME_SHOWN] + "..."


def refuse_unknown_or_repeated_query(request: Request) -> None:
    if not request.scope["query_string"] or request.method == "OPTIONS":
        return  # the common case: nothing to parse, nothing to look up
    rule = rule_of(request)
    names = [name for name, _ in request.query_params.multi_items()]
    # Sorted: Litestar's parsed query does not keep the order it came in.
    unknown = sorted({n for n in names if n not in rule.known})
    if unknown:
        operation = f"{request.method} {request.scope.get('path_template') or request.url.path}"
        message = f"not a query parameter of {operation}; known: {rule.listing()}"
        raise ValidationException(
            detail=f"invalid request: {_shown(unknown[0])}: {message}",
            extra=[{"key": _shown(name), "source": "query",
                    "message": message if name else f"a parameter without a name is {message}"}
                   for name in unknown[:MAX_NAMED]],
        )
    if len(names) < 2:
        return
    seen: set[str] = set()
    for name in names:
        if name in seen and name not in rule.repeatable:
            raise ValidationException(
                detail=f"invalid request: {name}: given more than once; give it once",
                extra=[{"key": name, "source": "query", "message": "given more than once"}],
            )
        seen.add(name)


async def before_api_request(request: Request) -> None:
    # async although it never awaits: Litestar runs a sync hook in a thread pool, a thread
    # hop per request for checks that take microseconds.
    refuse_unknown_or_repeated_query(request)
    refuse_unhonoured(request)
