"""Known-answer parts over HTTP: mark, list, remove, the line's rate, a blind claim, and the
inspectors' accuracy (supervisors only)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlmodel import Session, select

from inspect_app.lines import add_line
from inspect_app.reference import serving
from inspect_app.storage.tables import Inspection, User


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_mark_serve_blind_and_read_accuracy(
    client: TestClient,
    user_token: Callable[[str], str],
    add_labeled_parts: Callable[..., list[int]],
) -> None:
    supervisor = _bearer(user_token("supervisor"))
    inspector = _bearer(user_token("inspector"))
    engine = client.app.state.engine  # type: ignore[attr-defined]
    with Session(engine, expire_on_commit=False) as db:
        add_line(db, "line-1")
        someone = db.exec(select(User)).first()
        assert someone is not None and someone.id is not None
        ref_ids = add_labeled_parts(db, "line-1", [0.9], ["scratch"], user_id=someone.id)
        live_ids = add_labeled_parts(
            db, "line-1", [0.99], [None], user_id=someone.id, route="audit"
        )
        # the reference's image in the store, as the camera's upload would have put it
        source = db.get(Inspection, ref_ids[0])
        assert source is not None
        source.image_sha256 = client.app.state.image_store.put(b"the reference's bytes", db)  # type: ignore[attr-defined]
        db.add(source)
        db.commit()

    # inspectors may not mark reference parts
    body = {"inspection_id": ref_ids[0], "label": "scratch", "reason": "two supervisors agree"}
    assert client.post("/api/v1/reference-parts", json=body, headers=inspector).status_code == 403
    made = client.post("/api/v1/reference-parts", json=body, headers=supervisor)
    assert made.status_code == 201, made.text
    reference_id = made.json()["reference_id"]
    again = client.post("/api/v1/reference-parts", json=body, headers=supervisor)
    assert again.status_code == 409 and "already" in again.json()["detail"]
    missing = client.post(
        "/api/v1/reference-parts", json=body | {"inspection_id": 999_999}, headers=supervisor
    )
    assert missing.status_code == 404
    blank = client.post("/api/v1/reference-parts", json=body | {"reason": "  "}, headers=supervisor)
    assert blank.status_code == 422
    listed = client.get("/api/v1/reference-parts", headers=supervisor).json()
    assert [p["inspection_id"] for p in listed] == ref_ids

    bad_rate = client.put(
        "/api/v1/lines/line-1/reference-settings",
        json={"reference_rate": 0.9, "reason": "x"},
        headers=supervisor,
    )
    assert bad_rate.status_code == 422
    rate = client.put(
        "/api/v1/lines/line-1/reference-settings",
        json={"reference_rate": 0.5, "reason": "measure the shift"},
        headers=supervisor,
    )
    assert rate.status_code == 200 and rate.json()["reference_rate"] == 0.5

    serving.seed(0)  # random() of Random(0) starts 0.844, 0.758, 0.420: the third is served
    shown = []
    for _ in range(3):
        claim = client.post("/api/v1/reviews/claim", headers=inspector)
        assert claim.status_code == 200
        shown.append(claim.json())
        if len(shown) < 3:
            client.post(f"/api/v1/reviews/{claim.json()['task_id']}/release", headers=inspector)
    live, reference = shown[0], shown[2]
    assert live["inspection_id"] == live_ids[0]
    assert set(reference) == set(live)  # the same payload, no marker
    assert {k: type(v) for k, v in reference.items()} == {k: type(v) for k, v in live.items()}
    assert reference["reason"] == live["reason"] and reference["predicted_class"] is None
    # shown by a number of its own from the inspections' id space, never the source's
    assert reference["inspection_id"] not in ref_ids + live_ids
    assert reference["inspection_id"] > max(ref_ids + live_ids)
    assert reference["image_url"] == f"/api/v1/inspections/{reference['inspection_id']}/image"
    assert reference["image_url"].replace(str(reference["inspection_id"]), "{id}") == live[
        "image_url"
    ].replace(str(live["inspection_id"]), "{id}")
    # that number is the part's image to the inspector it was served to, to nobody else
    image = client.get(reference["image_url"], headers=inspector)
    source_image = client.get(f"/api/v1/inspections/{ref_ids[0]}/image", headers=supervisor)
    assert image.status_code == 200 and image.content == source_image.content
    assert client.get(reference["image_url"], headers=supervisor).status_code == 404
    labeled = client.post(
        f"/api/v1/reviews/{reference['task_id']}/label", json={"label": "ok"}, headers=inspector
    )
    assert labeled.status_code == 200, labeled.text
    reply = labeled.json()
    assert reply["inspection_id"] == reference["inspection_id"]
    assert reply["task_id"] == reference["task_id"] and reply["decision"] in ("pass", "fail")
    # the undo takes the part's number, corrects the answer, and says the same
    undone = client.post(
        f"/api/v1/inspections/{reference['inspection_id']}/relabel",
        json={"label": "scratch"},
        headers=inspector,
    )
    assert undone.status_code == 200, undone.text
    assert undone.json()["inspection_id"] == reference["inspection_id"]
    assert undone.json()["label_id"] != reply["label_id"]  # a new label, as a live undo's
    twice = client.post(
        f"/api/v1/reviews/{reference['task_id']}/label", json={"label": "ok"}, headers=inspector
    )
    assert twice.status_code == 409  # as for a live task already labeled
    inspection = client.get(f"/api/v1/inspections/{ref_ids[0]}", headers=supervisor).json()
    assert inspection["decision"] == "fail"  # the verdict "ok" changed nothing

    assert client.get("/api/v1/inspectors/accuracy", headers=inspector).status_code == 403
    accuracy = client.get("/api/v1/inspectors/accuracy", headers=supervisor).json()
    (figures,) = accuracy["inspectors"]
    assert figures["answers"] == 1 and figures["binary"]["count"] == 1  # corrected to scratch
    assert figures["per_class"]["scratch"]["n"] == 1
    assert accuracy["missed_defects"] == figures["missed_defects"]
    assert 0.0 <= figures["binary"]["lower"] <= figures["binary"]["upper"] <= 1.0

    removed = client.delete(
        f"/api/v1/reference-parts/{reference_id}", params={"reason": "done"}, headers=supervisor
    )
    assert removed.status_code == 204
    assert client.get("/api/v1/reference-parts", headers=supervisor).json() == []
    gone = client.delete(
        f"/api/v1/reference-parts/{reference_id}", params={"reason": "again"}, headers=supervisor
    )
    assert gone.status_code == 404
