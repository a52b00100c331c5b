"""The audit log: entries for every state change, filters and cursor pagination."""

import datetime as dt

from tests.conftest import forget_body


def test_a_completed_request_leaves_a_full_trail(client):
    request = client.post("/forget-requests?wait=true", json=forget_body()).json()
    entries = client.get("/audit-log", params={"forget_request_id": request["id"]}).json()["items"]
    actions = [e["action"] for e in reversed(entries)]  # oldest first
    assert actions == ["forget_request.received", "forget_request.started",
                       "forget_request.completed"]
    received, _, completed = reversed(entries)
    assert received["subject_reference"] == "GDPR-2026-0042"
    assert received["details"]["requested_by"] == "privacy.officer@example.com"
    assert received["actor"] == "test-admin"  # the API key's name (issue 5)
    assert completed["model_version"] == request["result_version"]
    assert completed["details"]["source_version"] == 1
    details = completed["details"]
    assert details["after"]["forget"]["accuracy"] < details["before"]["forget"]["accuracy"]
    assert "confusion_matrix" not in details["after"]["forget"]


def test_filters(client):
    client.post("/forget-requests?wait=true", json=forget_body(subject_reference="A"))
    client.post("/forget-requests?wait=true", json=forget_body(subject_reference="B", classes=[3]))
    by_subject = client.get("/audit-log", params={"subject_reference": "B"}).json()["items"]
    assert by_subject and all(e["subject_reference"] == "B" for e in by_subject)
    by_action = client.get("/audit-log", params={"action": "forget_request.completed"}).json()
    assert len(by_action["items"]) == 2
    by_version = client.get("/audit-log", params={"model_version": 3}).json()["items"]
    assert by_version and all(e["model_version"] == 3 for e in by_version)
    registered = client.get("/audit-log", params={"action": "model.registered"}).json()["items"]
    assert registered[0]["actor"] == "test"
    by_actor = client.get("/audit-log", params={"actor": "test"}).json()["items"]
    assert [e["action"] for e in by_actor] == ["model.registered", "model.created"]

    future = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).isoformat()
    assert client.get("/audit-log", params={"since": future}).json()["items"] == []
    # registration (model.created + model.registered) + the test key's creation (issue 5)
    # + 2 x 3 request entries
    assert len(client.get("/audit-log", params={"until": future}).json()["items"]) == 9
    naive = client.get("/audit-log", params={"since": "2026-01-01T00:00:00"})
    assert naive.status_code == 422 and naive.json()["error"]["field"] == "since"
    assert client.get("/audit-log", params={"action": "nonsense"}).status_code == 422


def test_cursor_pagination_walks_every_entry_once(client):
    for subject in "ABC":
        client.post("/forget-requests?wait=true", json=forget_body(subject_reference=subject))
    everything = client.get("/audit-log", params={"limit": 500}).json()
    assert everything["next_cursor"] is None
    seen, cursor = [], None
    while True:
        params = {"limit": 4} | ({"cursor": cursor} if cursor else {})
        page = client.get("/audit-log", params=params).json()
        seen += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [e["id"] for e in everything["items"]]
    # registration (model.created + model.registered) + the test key's creation (issue 5)
    # + 3 x 3 request entries
    assert len(seen) == len(set(seen)) == 12
