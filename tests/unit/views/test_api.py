"""The API without a database (views/api.py and the modules it builds on): parameter
validation, the OpenAPI document against the routes, the docs page, the API key and CORS (on
paths that need no database), and the import order of the API's modules. The cache and the
query helpers have their own tests (test_api_cache.py, test_queries.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from app.settings import load
from views.api import create_app

NOWHERE = {"MONGO_URL": "mongodb://127.0.0.1:9", "WORKER_URL": "http://127.0.0.1:9"}


def _client(**env: str) -> TestClient:
    return TestClient(create_app(load({**NOWHERE, **env})))


# --- validation happens before any database access -----------------------------------------------
@pytest.mark.parametrize("url,params", [
    ("/anomalies?limit=0&min_z=x&since=nope&category=zzz&cursor=%%%",
     {"limit", "min_z", "since", "category", "cursor"}),
    ("/merchants/top?window=5m&by=x&limit=a", {"window", "by", "limit"}),
    ("/volume?minutes=0", {"minutes"}),
    ("/users/" + "u" * 65 + "/trends?days=-1", {"user_id", "days"}),
    ("/users//trends", {"user_id"}),
])
def test_every_bad_parameter_is_named(url: str, params: set[str]) -> None:
    with _client() as c:
        resp = c.get(url)
    assert resp.status_code == 422
    assert {e["param"] for e in resp.json()["errors"]} == params


def test_openapi_describes_every_route() -> None:
    app = create_app(load(NOWHERE))
    with TestClient(app) as c:
        schema = c.get("/openapi.json").json()
        routes = {r.path.replace(":path", "") for r in app.routes}
        assert set(schema["paths"]) == routes - {"/openapi.json", "/docs"}
        assert "securitySchemes" not in schema["components"]
        page = c.get("/docs")
    assert page.status_code == 200 and "openapi.json" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from the internet


def test_api_key_and_cors_without_database() -> None:
    with _client(API_KEY="k", CORS_ORIGINS="http://a.test") as c:
        assert c.get("/openapi.json").status_code == 401
        ok = c.get("/openapi.json", headers={"X-API-Key": "k", "Origin": "http://a.test"})
        assert ok.status_code == 200 and ok.json()["security"] == [{"ApiKey": []}]
        assert ok.headers["access-control-allow-origin"] == "http://a.test"
        assert c.get("/docs").status_code == 401  # every endpoint but /health
        assert c.get("/docs", headers={"X-API-Key": "k"}).status_code == 200
        denied = c.get("/openapi.json", headers={"Origin": "http://a.test"})
        assert denied.status_code == 401  # CORS headers on errors too, so browsers see them
        assert denied.headers["access-control-allow-origin"] == "http://a.test"


# --- module layout ----------------------------------------------------------------------------
#: The API's modules, each allowed to import only those after it (views/api.py's docstring).
LAYERS = ["api", "api_handlers", "api_middleware", "api_service", "api_params", "api_errors",
          "api_openapi", "api_cache", "queries", "api_types"]


def _views_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "views":
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("views."):
            names.add(node.module.removeprefix("views."))
        elif isinstance(node, ast.Import):
            names.update(a.name.removeprefix("views.") for a in node.names
                         if a.name.startswith("views."))
    return names


def test_api_modules_import_one_way() -> None:
    views = Path(__file__).resolve().parents[3] / "views"
    found = {p.stem for p in views.glob("api*.py")} | {"queries"}
    assert found == set(LAYERS)
    for i, name in enumerate(LAYERS):
        imported = _views_imports(views / f"{name}.py") & set(LAYERS)
        assert imported <= set(LAYERS[i + 1:]), f"{name} imports {imported - set(LAYERS[i + 1:])}"
