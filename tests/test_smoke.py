from tests.conftest import error


def test_root_and_health_are_bare(api):
    assert api.get("/health").json() == {"status": "healthy"}
    body = api.get("/").json()
    assert body["message"] == "Squirrel Backend API" and body["docs"] == "/docs"


def test_unknown_v1_route_is_enveloped_404(api, db):
    assert "No route" in error(api.get("/v1/nothing-here"), 404)
