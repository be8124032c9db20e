"""Answers on the review desk that cannot go wrong (issue 27): a settled card refuses a second
answer, the group "none of these" refuses faces the page did not show and lists every face it
clears, "add as reference" refuses a photo replaced since its card was made, and on the network an
account undoes only its own decisions and adds references only with the right to."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import pytest

from conftest import LFW
from optout_guard.config import load_settings
from optout_guard.desk import Desk, DeskOptions, create_app
from optout_guard.errors import AlreadySettled
from optout_guard.review import NONE
from optout_guard.users import UserStore
from test_desk import BLAIR, HUGO, group_photo, sign_in, sources, templates_of, workspace

pytestmark = pytest.mark.data


def _lan_desk(tmp_path):
    """A desk on the network with two accounts: teacher (no names) and officer (names)."""
    settings = workspace(tmp_path / "ws")
    users = UserStore(settings.index_file.parent)
    users.add("teacher", "correct horse battery", names=False)
    users.add("officer", "staple gun orange tree", names=True)
    return settings, Desk(settings, DeskOptions(host="0.0.0.0", lan=True, allowed_hosts=("desk.school.lan",)))


def _token(client) -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', client.get("/").get_data(as_text=True)).group(1)


def test_a_settled_card_refuses_a_second_answer(tmp_path, data_dir):
    settings = workspace(tmp_path / "ws")
    desk = Desk(settings, DeskOptions())
    desk.check_upload(HUGO.name, HUGO.read_bytes(), "a")
    card = next(c for c in desk.book.queue() if c.candidates)
    app = create_app(desk)
    browser_a, browser_b = app.test_client(), app.test_client()
    token_a, token_b = _token(browser_a), _token(browser_b)  # both pages loaded with the card open
    if True:
        first = browser_a.post(f"/api/cards/{card.id}/decide", json={"answer": "student", "student_id": "hugo"},
                               headers={"X-CSRFToken": token_a})  # fmt: skip
        assert first.status_code == 200 and first.get_json()["verdict"] == "block"
        second = browser_b.post(f"/api/cards/{card.id}/decide", json={"answer": "none", "confirm": True},
                                headers={"X-CSRFToken": token_b})  # fmt: skip
        assert second.status_code == 409 and "already answered" in second.get_json()["error"]
    assert desk.book.photo(card.sha256)["verdict"] == "block"  # the first answer stands
    active = [d for d in desk.book.decisions(10) if not d.get("undone_at")]
    assert len(active) == 1
    with pytest.raises(AlreadySettled):  # the library call refuses too, not only the web route
        desk.book.settle(card.id, NONE, "c")


def test_the_group_answer_refuses_faces_the_page_did_not_show_and_lists_what_it_clears(tmp_path, data_dir):
    settings = workspace(tmp_path / "ws")
    (settings.workspace / "config.toml").write_text("block_distance = 0.2\nreview_distance = 0.55\n")
    desk = Desk(load_settings(settings.workspace, environ={}), DeskOptions())
    photo = group_photo(tmp_path)
    desk.check_upload(photo.name, photo.read_bytes(), "a")  # several faces, each resembling a student
    cards = [c for c in desk.book.queue() if c.candidates]
    assert len(cards) >= 2
    sha = cards[0].sha256
    app = create_app(desk)
    with app.test_client() as client:
        token = _token(client)
        headers = {"X-CSRFToken": token}
        # The page showed only one of the two faces (the other came later): nothing is settled.
        stale = client.post(f"/api/photos/{sha}/none", json={"card_ids": [cards[0].id], "confirm": True}, headers=headers)
        assert stale.status_code == 409 and "not the ones on your screen" in stale.get_json()["error"]
        assert all(desk.book.is_open(c.id) for c in cards)
        # Without the ids the page showed, the request is refused outright.
        assert client.post(f"/api/photos/{sha}/none", json={"confirm": True}, headers=headers).status_code == 400
        # With them: one confirmation that names each face, its closest student and distance.
        ids = [c.id for c in cards]
        asked = client.post(f"/api/photos/{sha}/none", json={"card_ids": ids}, headers=headers)
        assert asked.status_code == 409
        text = asked.get_json()["confirm"]
        for c in cards:
            assert f"face {c.face + 1}: closest {c.candidates[0].student_id} at {c.candidates[0].distance:.3f}" in text
        done = client.post(f"/api/photos/{sha}/none", json={"card_ids": ids, "confirm": True}, headers=headers)
        assert done.status_code == 200 and done.get_json()["settled"] == len(cards)


def test_add_as_reference_refuses_a_photo_replaced_since_its_card(tmp_path, data_dir):
    settings = workspace(tmp_path / "ws")
    folder = tmp_path / "check"
    (folder / "review").mkdir(parents=True)
    photo = folder / "review" / HUGO.name
    shutil.copy(HUGO, photo)
    desk = Desk(settings, DeskOptions(check_folders=[folder]))
    desk.import_sources()
    card = next(c for c in desk.book.queue() if c.candidates)
    before = templates_of(settings, "hugo")
    shutil.copy(LFW / "Colin_Powell" / "Colin_Powell_0004.jpg", photo)  # replaced under the same name
    with pytest.raises(ValueError, match="has changed since this card was made"):
        desk.decide(card.id, "hugo", "officer", add_reference=True)
    assert templates_of(settings, "hugo") == before  # no face of another person in hugo's references
    assert desk.book.is_open(card.id)  # and the card still waits for an answer


def test_on_the_network_undo_is_ones_own_and_references_need_the_right(tmp_path, data_dir):
    settings = workspace(tmp_path / "ws")
    users = UserStore(settings.index_file.parent)
    users.add("teacher", "correct horse battery", names=False)
    users.add("coach", "another long password", names=False)
    users.add("officer", "staple gun orange tree", names=True)
    desk = Desk(settings, DeskOptions(host="0.0.0.0", lan=True, allowed_hosts=("desk.school.lan",)))
    photo = group_photo(tmp_path)
    desk.check_upload(photo.name, photo.read_bytes(), "t")
    first, second = [c for c in desk.book.queue() if c.candidates][:2]
    app = create_app(desk)
    app.config["SERVER_NAME"] = "desk.school.lan"
    with app.test_client() as teacher:
        sign_in(teacher, "teacher", "correct horse battery")
        headers = {"X-CSRFToken": _token(teacher)}
        answer = {"answer": "student", "student_id": first.candidates[0].student_id, "add_reference": True}
        ref = teacher.post(f"/api/cards/{first.id}/decide", headers=headers, json=answer)
        assert ref.status_code == 403 and desk.book.is_open(first.id)
        mine = teacher.post(f"/api/cards/{first.id}/decide", json={"answer": "none", "confirm": True}, headers=headers)
        assert mine.status_code == 200
        decision = mine.get_json()["decision"]
    with app.test_client() as coach:
        sign_in(coach, "coach", "another long password")
        refused = coach.post(f"/api/decisions/{decision}/undo", headers={"X-CSRFToken": _token(coach)})
        assert refused.status_code == 403 and not desk.book.is_open(first.id)
    with app.test_client() as teacher:
        sign_in(teacher, "teacher", "correct horse battery")
        assert teacher.post(f"/api/decisions/{decision}/undo", headers={"X-CSRFToken": _token(teacher)}).status_code == 200
        assert desk.book.is_open(first.id)
    assert desk.book.is_open(second.id)


def test_a_desk_decision_keeps_the_watchs_copy_fit_to_post(tmp_path, data_dir):
    """Issue 29, B2: the desk refiled a check-folder photo without the watch's options, so a photo
    settled on the desk lost its copy fit to post. The watch records its options; the desk files
    as the watch would, under the folder's filing lock."""
    from optout_guard.pipeline import Guard
    from optout_guard.watch import FILING_LOCK, CheckFolder

    settings = workspace(tmp_path / "ws")
    folder = tmp_path / "check"
    folder.mkdir()
    shutil.copy(HUGO, folder / HUGO.name)
    CheckFolder(folder, Guard(settings), settle=0.1, arrival_grace=0.0, redact=True).run_once()
    assert (folder / "review" / f"{HUGO.name}.postable.jpg").is_file()
    desk = Desk(settings, DeskOptions(check_folders=[folder]))
    desk.import_sources()
    card = next(c for c in desk.book.queue() if c.candidates)
    outcome = desk.decide(card.id, "hugo", "officer", add_reference=False)
    assert outcome["moved_to"] == f"blocked/{HUGO.name}"
    assert (folder / "blocked" / f"{HUGO.name}.postable.jpg").is_file()  # still there for staff to post
    assert not (folder / "review" / f"{HUGO.name}.postable.jpg").exists()
    assert (folder / FILING_LOCK).exists()  # filed under the folder's lock


def test_an_index_the_desk_cannot_read_is_a_503_that_says_why(tmp_path, data_dir):
    settings = workspace(tmp_path / "ws")
    desk = Desk(settings, DeskOptions())
    app = create_app(desk)
    client = app.test_client()
    token = _token(client)
    settings.index_file.write_bytes(b"OPTOUT-GUARD-INDEX-AESGCM-1\n" + bytes(200))  # encrypted with a key it lacks
    sent = client.post("/api/check", data={"photos": (HUGO.open("rb"), "hugo.jpg")}, headers={"X-CSRFToken": token},
                       content_type="multipart/form-data")  # fmt: skip
    assert sent.status_code == 503 and "cannot check anything now" in sent.get_json()["error"]


def test_the_desk_follows_an_edited_config_without_a_restart(tmp_path, data_dir):
    """Issue 28: threshold edits in config.toml were not picked up by a running desk."""
    settings = workspace(tmp_path / "ws")  # block 0.35, review 0.65: Hugo's photo is a review
    app = create_app(Desk(settings, DeskOptions()))
    client = app.test_client()
    token = _token(client)

    def verdict() -> str:
        sent = client.post("/api/check", data={"photos": (HUGO.open("rb"), "hugo.jpg")}, headers={"X-CSRFToken": token},
                           content_type="multipart/form-data")  # fmt: skip
        return sent.get_json()["results"][0]["verdict"]

    assert verdict() == "review"
    (settings.workspace / "config.toml").write_text("block_distance = 0.45\nreview_distance = 0.65\n")
    assert verdict() == "block"


def test_the_page_offers_only_what_the_account_may_do_and_takes_clips(tmp_path, data_dir):
    """Issue 27: "A family opted out today" was shown to accounts that may not use it; the picker
    hid video files; the page told a browser on another PC that "nothing leaves this computer"."""
    settings, desk = _lan_desk(tmp_path)
    app = create_app(desk)
    app.config["SERVER_NAME"] = "desk.school.lan"
    with app.test_client() as teacher:
        sign_in(teacher, "teacher", "correct horse battery")
        page = teacher.get("/").get_data(as_text=True)
        assert "A family opted out today" not in page and "video/*" in page
        assert "nothing leaves this computer" not in page.lower() and "review desk's computer" in page
    with app.test_client() as officer:
        sign_in(officer, "officer", "staple gun orange tree")
        assert "A family opted out today" in officer.get("/").get_data(as_text=True)
    local = create_app(Desk(settings, DeskOptions())).test_client().get("/").get_data(as_text=True)
    assert "A family opted out today" in local and "nothing leaves it" in local


def test_wrong_passwords_elsewhere_do_not_lock_the_officer_out_and_only_a_trusted_proxy_names_clients():
    """Issue 27: the back-off per account name let anyone keep the privacy officer locked out, and
    behind a reverse proxy every client shared one address."""
    from optout_guard.desk.signin import SignInThrottle, client_address

    now = [0.0]
    throttle = SignInThrottle(clock=lambda: now[0])
    for _ in range(8):
        throttle.failure("officer", "10.0.0.66")  # somebody guessing from another machine
    assert throttle.wait("officer", "10.0.0.66") > 0  # that machine waits …
    assert throttle.wait("officer", "10.0.0.12") == 0  # … the officer at her own desk does not
    assert throttle.wait("teacher", "10.0.0.66") > 0  # and the guessing machine is slowed for every account
    proxy = ("10.0.0.2",)
    assert client_address("10.0.0.2", "10.0.0.66, 10.0.0.2", proxy) == "10.0.0.66"
    assert client_address("10.0.0.2", "198.51.100.7, 10.0.0.66", proxy) == "10.0.0.66"  # the hop the proxy saw
    assert client_address("10.0.0.9", "10.0.0.12", proxy) == "10.0.0.9"  # a header from anyone else: ignored
    assert client_address("10.0.0.2", "", proxy) == "10.0.0.2"


def test_a_reference_is_recorded_before_it_is_written_so_a_kill_between_leaves_nothing_unrecorded(tmp_path, data_dir,
                                                                                                   monkeypatch):  # fmt: skip
    """Issue 27: "R" wrote the reference before recording the decision: a kill between the two left a
    template that no decision named and nobody could undo from the desk. Now the decision names the
    planned reference first; undoing it removes that reference even if its key was never recorded."""
    from optout_guard.enroll import add_reference_face
    from optout_guard.review import ReviewBook

    settings, folder, _library = sources(tmp_path, in_review=[HUGO], in_library=[])
    desk = Desk(settings, DeskOptions(check_folders=[folder]))
    desk.import_sources()
    card = next(c for c in desk.book.queue() if c.candidates and c.candidates[0].student_id == "hugo")
    before = templates_of(settings, "hugo")

    class Killed(BaseException):
        pass

    def written_then_killed(*args, **kwargs):
        add_reference_face(*args, **kwargs)  # the reference is written …
        raise Killed  # … and the process dies before the decision learns its key

    monkeypatch.setattr("optout_guard.enroll.add_reference_face", written_then_killed)
    monkeypatch.setattr(ReviewBook, "undo", lambda *a, **k: (_ for _ in ()).throw(Killed()))  # no clean-up either
    with pytest.raises(Killed):
        desk.decide(card.id, "hugo", "officer", add_reference=True)
    monkeypatch.undo()
    assert templates_of(settings, "hugo") == before + 1
    decision = next(d for d in desk.book.decisions(10) if d.get("student_id") == "hugo")
    assert str(decision["reference"]).startswith("pending:desk-")  # recorded before it was written
    desk.undo(decision["id"], "officer")
    assert templates_of(settings, "hugo") == before  # and undoing the decision removes it


def test_the_history_names_each_photo_says_undone_and_any_decision_reopens(tmp_path, data_dir):
    """Issue 27, item 8: the decisions list named a hash; an undo did not show; only the last
    decision of this page load could be undone."""
    settings, folder, _library = sources(tmp_path, in_review=[HUGO], in_library=[])
    desk = Desk(settings, DeskOptions(check_folders=[folder]))
    desk.import_sources()
    desk.check_upload(BLAIR.name, BLAIR.read_bytes(), "a")
    first = next(c for c in desk.book.queue() if c.source == "check folder")
    decided = desk.decide(first.id, "hugo", "officer", add_reference=False)["decision"]
    other = next(c for c in desk.book.queue() if c.candidates)
    desk.decide(other.id, NONE, "officer", add_reference=False, confirmed=True)
    client = create_app(desk).test_client()
    token = _token(client)
    history = client.get("/api/queue").get_json()["decisions"]
    named = {d["id"]: (d["photo_name"], d["source"]) for d in history}
    assert named[decided] == (HUGO.name, "check folder")
    # The older decision (not the last one) is reopened from the history.
    assert client.post(f"/api/decisions/{decided}/undo", headers={"X-CSRFToken": token}).status_code == 200
    again = {d["id"]: d for d in client.get("/api/queue").get_json()["decisions"]}
    assert again[decided]["undone_by"] and desk.book.is_open(first.id)


def test_a_face_that_is_not_a_student_is_ignored_for_good_and_undoable(tmp_path, data_dir):
    """Issue 27, item 5: a poster, a painting, an adult member of staff: "ignore this face", recorded
    by content hash, never asked again for that photo, said as such, undoable."""
    settings = workspace(tmp_path / "ws")
    desk = Desk(settings, DeskOptions())
    desk.check_upload(HUGO.name, HUGO.read_bytes(), "a")
    card = next(c for c in desk.book.queue() if c.candidates)
    client = create_app(desk).test_client()
    token = _token(client)
    answer = client.post(f"/api/cards/{card.id}/decide", json={"answer": "ignore", "confirm": True},
                         headers={"X-CSRFToken": token})  # fmt: skip
    assert answer.status_code == 200 and answer.get_json()["verdict"] == "allow"
    history = client.get("/api/queue").get_json()["decisions"]
    assert history[0]["action"] == "ignored (not a student)"
    desk.check_upload("again.jpg", HUGO.read_bytes(), "a")  # the same photo again: not asked again
    assert not desk.book.is_open(card.id) and not [c for c in desk.book.queue() if c.sha256 == card.sha256]
    client.post(f"/api/decisions/{history[0]['id']}/undo", headers={"X-CSRFToken": token})
    assert desk.book.is_open(card.id)


def test_a_student_added_later_shows_with_the_name_given(tmp_path, data_dir, samples):
    """Issue 27, item 12: a student added with `add` showed as "Student 104605" to accounts allowed
    to see names (the names were read once, when the desk started)."""
    from typer.testing import CliRunner

    from optout_guard.cli import app

    settings = workspace(tmp_path / "ws")
    desk = Desk(settings, DeskOptions(show_names=True))
    assert desk.names() == {}
    added = CliRunner().invoke(app, ["--workspace", str(settings.workspace), "add", "104605", "--first", "Ada",
                                     "--last", "Byron", str(samples["grace_hopper"])])  # fmt: skip
    assert added.exit_code == 0, added.output
    assert desk.names().get("104605") == "Ada Byron"


def test_the_check_page_offers_both_copies_for_download(tmp_path, data_dir):
    """Issue 27, item 9: the Check photos tab offers the marked-up copy and the copy fit to post."""
    settings = workspace(tmp_path / "ws")
    client = create_app(Desk(settings, DeskOptions())).test_client()
    token = _token(client)
    sent = client.post("/api/check", data={"photos": (HUGO.open("rb"), "assembly.jpg")}, headers={"X-CSRFToken": token},
                       content_type="multipart/form-data")  # fmt: skip
    result = sent.get_json()["results"][0]
    assert result["marked_url"] and result["postable_url"]
    copy = client.get(result["postable_url"])
    assert copy.status_code == 200 and copy.data[:2] == b"\xff\xd8"
    assert "attachment" in copy.headers["Content-Disposition"]
    assert client.get("/postable/" + "0" * 64).status_code == 404


def test_an_account_limited_to_a_school_sees_and_answers_that_schools_cards_only(tmp_path, data_dir):
    """Issue 27 §7: a school's account sees its school's cards, photos, faces and students and checks
    against its school; another school's card does not exist for it. A district account filters the
    queue by school, source and file name or student id."""
    from optout_guard.optout_list import OptOutList, Student, save_list

    settings = workspace(tmp_path / "ws")
    save_list(OptOutList({"hugo": Student("hugo", "Hugo", "C", "5", "Lincoln Elementary School"),
                          "colin": Student("colin", "Colin", "P", "7", "Washington Middle")}), settings.workspace)  # fmt: skip
    users = UserStore(settings.index_file.parent)
    users.add("lincoln", "correct horse battery", names=True, schools=("Lincoln Elementary",))
    users.add("officer", "staple gun orange tree", names=True)
    desk = Desk(settings, DeskOptions(host="0.0.0.0", lan=True, allowed_hosts=("desk.school.lan",)))
    colin_photo = LFW / "Colin_Powell" / "Colin_Powell_0024.jpg"  # colin 0.42: review
    desk.check_upload(HUGO.name, HUGO.read_bytes(), "officer")
    desk.check_upload(colin_photo.name, colin_photo.read_bytes(), "officer")
    cards = {c.candidates[0].student_id: c for c in desk.book.queue() if c.candidates}
    assert set(cards) == {"hugo", "colin"}
    hugo, colin = cards["hugo"], cards["colin"]
    app = create_app(desk)
    app.config["SERVER_NAME"] = "desk.school.lan"
    with app.test_client() as lincoln:
        sign_in(lincoln, "lincoln", "correct horse battery")
        headers = {"X-CSRFToken": _token(lincoln)}
        assert [c["id"] for c in lincoln.get("/api/queue").get_json()["cards"]] == [hugo.id]
        for url in (f"/face/{colin.id}.jpg", f"/photo/{colin.sha256}/original.jpg", "/reference/colin/0.jpg",
                    "/api/students/colin/photos", "/students/colin", "/students/colin/photo/0.jpg"):  # fmt: skip
            assert lincoln.get(url).status_code == 404, url
        assert lincoln.get(f"/face/{hugo.id}.jpg").status_code == 200
        own = lincoln.get("/students/hugo").get_data(as_text=True)  # the page of one of Lincoln's students
        shown = own.count('<article class="student-photo">')
        assert shown >= 1 and "photo checked on the page" in own and "Hugo" in own and HUGO.name not in own
        assert all(lincoln.get(f"/students/hugo/photo/{n}.jpg").mimetype == "image/jpeg" for n in range(shown))
        assert lincoln.get(f"/students/hugo/photo/{shown}.jpg").status_code == 404
        refused = lincoln.post(f"/api/cards/{colin.id}/decide", json={"answer": "none", "confirm": True}, headers=headers)
        assert refused.status_code == 404 and desk.book.is_open(colin.id)
        assert lincoln.get("/api/scopes").get_json()["scopes"] == ["Lincoln Elementary School"]
        form = {"photos": (io.BytesIO(HUGO.read_bytes()), "x.jpg"), "scope": "Washington Middle"}
        other = lincoln.post("/api/check", data=form, headers=headers, content_type="multipart/form-data")
        assert other.status_code == 403
        checked = lincoln.post("/api/check", data={"photos": (io.BytesIO(colin_photo.read_bytes()), "y.jpg")},
                               headers=headers, content_type="multipart/form-data")  # fmt: skip
        assert checked.status_code == 200 and checked.get_json()["results"][0]["verdict"] == "allow"  # Lincoln's gallery only
        form = {"photos": (io.BytesIO(colin_photo.read_bytes()), "y.jpg"), "scope": "district"}
        district = lincoln.post("/api/check", data=form, headers=headers, content_type="multipart/form-data").get_json()
        district = district["results"][0]
        assert district["verdict"] == "review"  # the whole district, on request: Washington's student is held …
        seen = district["faces"][0]["candidates"][0]
        assert seen["student_id"] == "colin" and "name" not in seen and seen["references"] == []  # … but not shown
        assert lincoln.post(f"/api/cards/{hugo.id}/decide", json={"answer": "student", "student_id": "hugo"},
                            headers=headers).status_code == 200  # fmt: skip
    with app.test_client() as officer:
        sign_in(officer, "officer", "staple gun orange tree")
        assert [c["id"] for c in officer.get("/api/queue").get_json()["cards"]] == [colin.id]
        assert [c["id"] for c in officer.get("/api/queue?school=Washington Middle").get_json()["cards"]] == [colin.id]
        assert officer.get("/api/queue?school=Lincoln Elementary").get_json()["cards"] == []
        assert [c["id"] for c in officer.get("/api/queue?q=colin").get_json()["cards"]] == [colin.id]
        assert officer.get("/api/queue?source=audit").get_json()["cards"] == []
        # The audit report's link to one group: the photos in a folder and below it.
        uploads = Path(colin.photo_path).parent

        def in_folder(folder: Path) -> list[int]:
            return [c["id"] for c in officer.get("/api/queue", query_string={"folder": str(folder)}).get_json()["cards"]]

        assert in_folder(uploads) == in_folder(uploads.parent) == [colin.id] and in_folder(tmp_path / "elsewhere") == []
        assert officer.get(f"/face/{colin.id}.jpg").status_code == 200


def test_domain_errors_map_to_one_status_each_on_every_route(tmp_path, data_dir):
    """Issue 29 §5: one error handler maps the desk's domain errors — not KeyError / ValueError in
    each route — to 404 (NotFound) and 409 (Refused, AlreadySettled, NeedsConfirmation with its question)."""
    from optout_guard.errors import NotFound, Refused

    assert issubclass(NotFound, KeyError) and issubclass(Refused, ValueError)  # old callers still catch them
    settings = workspace(tmp_path / "ws")
    desk = Desk(settings, DeskOptions())
    desk.check_upload(HUGO.name, HUGO.read_bytes(), "a")
    card = next(c for c in desk.book.queue() if c.candidates)
    app = create_app(desk)
    with app.test_client() as client:
        headers = {"X-CSRFToken": _token(client)}
        assert client.post("/api/decisions/99999/undo", headers=headers).status_code == 404
        wrong = client.post(f"/api/cards/{card.id}/decide", json={"answer": "student", "student_id": "colin0"}, headers=headers)
        assert wrong.status_code == 409 and "not one of this face's candidates" in wrong.get_json()["error"]
        done = client.post(f"/api/cards/{card.id}/decide", json={"answer": "student", "student_id": "hugo"}, headers=headers)
        decision = done.get_json()["decision"]
        assert client.post(f"/api/decisions/{decision}/undo", headers=headers).status_code == 200
        again = client.post(f"/api/decisions/{decision}/undo", headers=headers)
        assert again.status_code == 409 and "already undone" in again.get_json()["error"]
        assert client.post("/api/recognised/99999/hold", headers=headers).status_code == 404
