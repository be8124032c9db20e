"""The review desk's web layer: a Flask Blueprint over :class:`~optout_guard.desk.service.Desk`.

Pages are Jinja2 templates (``templates/``, autoescaped: nothing is filled in by string
replacement); the API answers JSON. Safety rules of the whole desk: see ``desk/__init__``.
The views are module-level functions of one Blueprint; what one running desk shares between
requests (the :class:`Desk`, the accounts, the signed-in sessions, the sign-in throttle) is a
:class:`DeskApp` in the app's ``extensions``, made by :func:`create_app`.
"""

from __future__ import annotations

import getpass
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    session,
    url_for,
)
from flask_wtf.csrf import CSRFError, CSRFProtect, generate_csrf

from optout_guard.desk.service import MAX_UPLOAD_BYTES, REFERENCE_PX, Desk
from optout_guard.desk.signin import SignInThrottle, client_address, lan_host_allowed, local_target, secret_key
from optout_guard.errors import (
    ConfigError,
    ImageRejected,
    IndexUnusable,
    ModelUnavailable,
    NeedsConfirmation,
    NotFound,
    OptoutGuardError,
)
from optout_guard.review import BLURRED, NONE, PHOTO, UNNAMED
from optout_guard.users import UserStore

HERE = Path(__file__).parent
# After a wrong password the answer waits this long (seconds), which slows down guessing; with the
# throttle (signin.SignInThrottle), a guesser is refused outright after a few. ``pause``: how.
WRONG_PASSWORD_PAUSE = 0.5
pause: Callable[[float], None] = time.sleep
bp = Blueprint("desk", __name__, template_folder="templates")  # pages autoescaped by Jinja2


@dataclass
class DeskApp:
    """What one running desk shares between its requests."""

    desk: Desk
    users: UserStore
    # Server-side sessions: the cookie only names one (signed); logout, a password change or a
    # re-created account ends it here, whatever copy of the cookie is still around.
    live: dict[str, tuple[str, str]] = field(default_factory=dict)  # session id -> (account, its epoch when signed in)
    failures: SignInThrottle = field(default_factory=SignInThrottle)


def create_app(desk: Desk) -> Flask:
    app = Flask(__name__, static_folder=None)
    app.config.update(
        SECRET_KEY=secret_key(desk.state),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        MAX_CONTENT_LENGTH=MAX_UPLOAD_BYTES,
        WTF_CSRF_TIME_LIMIT=None,  # valid for the session: a reviewer's page stays open all day
        WTF_CSRF_SSL_STRICT=False,  # plain HTTP on a LAN; the token + SameSite cookie still apply
    )
    CSRFProtect(app)
    app.extensions["optout_guard.desk"] = DeskApp(desk, UserStore(desk.state))
    app.register_blueprint(bp)
    return app


def _here() -> DeskApp:
    return current_app.extensions["optout_guard.desk"]


def _desk() -> Desk:
    return _here().desk


def current_user() -> str | None:
    here = _here()
    if not here.desk.options.lan:
        return f"{getpass.getuser()}@local"
    sid = session.get("sid")
    signed_in = here.live.get(sid) if isinstance(sid, str) else None
    if signed_in is None:
        return None
    name, epoch = signed_in
    if here.users.epoch(name) != epoch:
        here.live.pop(str(sid), None)
        return None
    return name


def may_see_names() -> bool:
    here = _here()
    if not here.desk.options.lan:
        return here.desk.options.show_names
    name = current_user()
    return bool(name and here.users.can_see_names(name))


def reach() -> tuple[str, ...]:
    """The school keys the signed-in account answers for; () = the whole district."""
    from optout_guard.optout_list import school_key

    here = _here()
    name = current_user() if here.desk.options.lan else None
    return tuple(school_key(s) for s in here.users.schools_of(name)) if name else ()


def card_or_404(card_id: int) -> Any:
    """The card, if this account may see it (another school's card does not exist for it)."""
    desk = _desk()
    card = desk.book.card(card_id)
    if card is None or not desk.card_within(card, reach()):
        abort(404)
    return card


def photo_or_404(sha: str) -> None:
    if not _desk().photo_within(sha, reach()):
        abort(404)


@bp.before_app_request
def follow_settings() -> None:
    desk = _desk()
    desk.follow_settings()  # config.toml or the key edited: the next check uses them (two stats)


@bp.before_app_request
def guard_request() -> Any:
    options = _desk().options
    # Only the address we serve on (a web page elsewhere cannot rebind a name to 127.0.0.1).
    host = (request.host or "").rsplit(":", 1)[0].strip("[]")
    if not options.lan and host not in ("127.0.0.1", "localhost", "::1"):
        abort(403)
    if options.lan and not lan_host_allowed(host, options.allowed_hosts):
        abort(403)  # a name we were not told about: DNS rebinding from a web page
    if options.lan and request.endpoint not in ("desk.login", "desk.static_file") and current_user() is None:
        if request.path.startswith("/api/"):
            abort(401)
        # Back to the page asked for after sign-in (the audit report's link to a filtered queue, a student's page).
        return redirect(url_for("desk.login", next=request.full_path.rstrip("?")))
    return None


@bp.after_app_request
def headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' blob:; style-src 'self'; script-src 'self'; connect-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.app_errorhandler(IndexUnusable)
@bp.app_errorhandler(ModelUnavailable)
def unusable(exc: OptoutGuardError) -> Any:
    # The index or a model cannot be used now (a new key, a file gone): say what, not a bare 500.
    return jsonify(error=f"the review desk cannot check anything now: {exc}", unavailable=True), 503


# Domain errors, one mapping for every route: what does not exist (or not for this account) is
# 404; an answer refused as given, already settled, or needing one more yes is 409.

@bp.app_errorhandler(NotFound)
def not_found(exc: NotFound) -> Any:
    return jsonify(error=str(exc)), 404


@bp.app_errorhandler(NeedsConfirmation)
def needs_confirmation(exc: NeedsConfirmation) -> Any:
    return jsonify(error=str(exc), confirm=str(exc)), 409


@bp.app_errorhandler(OptoutGuardError)
def refused(exc: OptoutGuardError) -> Any:  # Refused, AlreadySettled, ImageRejected, …
    return jsonify(error=str(exc)), 409


@bp.app_errorhandler(CSRFError)
def csrf_error(exc: CSRFError) -> Any:
    return jsonify(error=f"refused: {exc.description} (reload the page)"), 400


def page(name: str, error: str = "", status: int = 200) -> Response:
    options = _desk().options
    lan = "1" if options.lan else "0"
    # "A family opted out today" only for accounts that may use it (they learned it after filling it in).
    may_add = not options.lan or may_see_names()
    html = render_template(name, csrf=generate_csrf(), user=current_user() or "", lan=lan, error=error, may_add=may_add,
                           next=local_target(request.values.get("next", "")))  # fmt: skip
    return Response(html, status, mimetype="text/html")


@bp.get("/")
def index() -> Response:
    return page("index.html")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    options = _desk().options
    users = _here().users
    live = _here().live
    failures = _here().failures
    if not options.lan:
        return redirect(url_for("desk.index"))
    if request.method == "POST":
        name, password = request.form.get("user", ""), request.form.get("password", "")
        client = client_address(request.remote_addr or "?", request.headers.get("X-Forwarded-For", ""),
                                 options.trusted_proxies)  # fmt: skip
        wait = failures.wait(name, client)
        if wait > 0:
            text = f"Too many wrong passwords: try again in {int(wait) + 1} s."
            return page("login.html", error=text, status=429)
        if users.verify(name, password):
            failures.success(name, client)
            session.clear()
            sid = secrets.token_urlsafe(24)
            live[sid] = (name, users.epoch(name) or "")
            session["sid"] = sid
            return redirect(local_target(request.form.get("next", "")) or url_for("desk.index"))
        failures.failure(name, client)
        pause(WRONG_PASSWORD_PAUSE)  # slows down guessing
        return page("login.html", error="Wrong name or password.", status=401)
    return page("login.html")


@bp.post("/logout")
def logout() -> Any:
    options = _desk().options
    live = _here().live
    live.pop(str(session.get("sid")), None)
    session.clear()
    return redirect(url_for("desk.login") if options.lan else url_for("desk.index"))


@bp.get("/static/<name>")
def static_file(name: str) -> Any:
    if name not in ("desk.js", "desk.css"):
        abort(404)
    return send_file(HERE / "static" / name, max_age=0)


def appearances_or_404(student_id: str) -> list[Any]:
    """Every photo of one student the desk's sources know (appearances.py), if this account may see them."""
    desk = _desk()
    options = desk.options
    from optout_guard.appearances import appearances
    from optout_guard.optout_list import is_valid_student_id

    if not is_valid_student_id(student_id) or not desk.student_within(student_id, reach()):
        abort(404)
    return appearances(desk.settings, student_id, options.check_folders)


@bp.get("/students/<student_id>")
def student_page(student_id: str) -> Response:
    """A page per student: every photo and clip where they were blocked, held or confirmed, newest
    first, pictured where the desk serves the photo (what to take down when a family opts out)."""
    desk = _desk()
    options = desk.options
    found = appearances_or_404(student_id)
    rows = [{
        "n": n, "when": (a.when or "").replace("T", " ")[:16], "source": a.source, "verdict": a.verdict, "how": a.how,
        "name": Path(a.path).name if a.source != "desk" else "photo checked on the page",
        "path": a.path if desk.allowed(a.path) is not None else "",
        "pictured": desk.allowed(a.marked or a.path) is not None,
        "distance": None if a.distance is None else f"{a.distance:.2f}",
    } for n, a in enumerate(found)]  # fmt: skip
    name = desk.candidate_json(student_id, 0.0, may_see_names()).get("name")
    html = render_template("student.html", student_id=student_id, name=name, rows=rows, user=current_user() or "",
                           lan="1" if options.lan else "0", csrf=generate_csrf())  # fmt: skip
    return Response(html, mimetype="text/html")


@bp.get("/students/<student_id>/photo/<int:n>.jpg")
def student_photo(student_id: str, n: int) -> Any:
    """The n-th photo of the student's page: its marked-up copy where one is kept, else the photo."""
    desk = _desk()
    found = appearances_or_404(student_id)
    if not 0 <= n < len(found):
        abort(404)
    path = desk.allowed(found[n].marked or found[n].path)
    if path is None:
        abort(404)
    try:
        return Response(desk.thumbnail(path, 1600), mimetype="image/jpeg")
    except (ImageRejected, OSError):
        abort(404)


@bp.get("/api/students/<student_id>/photos")
def api_student_photos(student_id: str) -> Any:
    """Every photo of one student the desk's sources know (appearances.py): what a privacy
    officer takes down when a family opts out mid-year."""
    desk = _desk()
    found = appearances_or_404(student_id)
    rows = []
    for a in found:
        row = a.as_json()
        row["name"] = Path(a.path).name if a.source != "desk" else "photo checked on the page"
        served = desk.allowed(a.path)
        row["path"] = row["path"] if served is not None else row["name"]  # no paths the desk does not serve
        rows.append(row)
    return jsonify(student_id=student_id, photos=rows)


@bp.get("/api/status")
def api_status() -> Any:
    desk = _desk()
    options = desk.options
    from optout_guard.status import status

    return jsonify(status(desk.settings, options.check_folders, options.audit_libraries))


@bp.get("/api/queue")
def api_queue() -> Any:
    desk = _desk()
    names = may_see_names()
    # Cards whose photo this desk does not serve now (started without that --audit or check
    # folder, a share not mounted) are held back, not shown broken; they return with their source.
    # A school's account sees its school's cards only.
    mine = reach()
    served = [c for c in desk.book.queue(300) if desk.allowed(c.photo_path) is not None and desk.card_within(c, mine)]
    # Filters: a school (district accounts), where the photo came from, a file name or student id.
    school, source, text, folder = (request.args.get(k, "").strip() for k in ("school", "source", "q", "folder"))
    filtered = bool(school or source or text or folder)
    if school:
        from optout_guard.optout_list import school_key

        served = [c for c in served if desk.card_within(c, (school_key(school),))]
    if source:
        served = [c for c in served if c.source == source]
    if folder:  # the audit report links each group of photos to review here: a folder and what lies under it
        within = Path(folder)
        served = [c for c in served if within == Path(c.photo_path).parent or within in Path(c.photo_path).parents]
    if text:
        needle = text.casefold()
        served = [c for c in served if needle in Path(c.photo_path).name.casefold()
                  or any(needle == s.casefold() for s in desk.resembles(c))]  # fmt: skip
    cards = [desk.card_json(c, names) for c in served[:30]]
    if cards:  # the card on top: the same child in other photos of its event, answered with it
        same = desk.same_child_json(served[0])
        cards[0]["same_child"] = [m for m in same if (o := desk.book.card(m["id"])) and desk.card_within(o, mine)]
    if mine:  # the photo's other faces waiting for a person: only this school's
        for c in cards:
            c["group"] = [g for g in c["group"] if (o := desk.book.card(g["id"])) and desk.card_within(o, mine)]
    return jsonify(
        cards=cards,
        # Every waiting photo card (not only those among the first 30): answered together on the page.
        photo_cards=[desk.card_json(c, names) for c in served if c.face == PHOTO][:200],
        # A school's account counts its school's cards only.
        open=desk.book.open_count() if not mine else sum(desk.card_within(c, mine) for c in desk.book.queue(100_000)),
        held_back=desk.book.open_count() - len(served) if len(served) < 300 and not mine and not filtered else 0,
        skipped=desk.book.skipped_count(),
        decisions=desk.book.decisions(10),
        importing=desk.importing,
    )


@bp.post("/api/photos/none")
def api_photos_none() -> Any:
    desk = _desk()
    ids = (request.get_json(silent=True) or {}).get("card_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, int) for i in ids):
        return jsonify(error="card_ids: the photo cards to answer, as a list of numbers"), 400
    for i in ids:
        card_or_404(i)
    return jsonify(desk.decide_photos(ids, current_user() or ""))


@bp.post("/api/photos/<sha>/none")
def api_photo_none(sha: str) -> Any:
    desk = _desk()
    body = request.get_json(silent=True) or {}
    shown = body.get("card_ids")
    if not isinstance(shown, list) or not all(isinstance(i, int) for i in shown):
        return jsonify(error="card_ids: the ids of the cards your page showed, as a list of numbers"), 400
    photo_or_404(sha)
    others = [c for i in desk.book.open_cards(sha).values() if (c := desk.book.card(i)) and not desk.card_within(c, reach())]
    if others:  # "none of these" would answer for another school's student too
        return jsonify(error="some faces of this photo are another school's to answer: answer yours one by one"), 403
    return jsonify(desk.decide_photo(sha, current_user() or "", bool(body.get("confirm")), shown))


@bp.get("/api/recognised")
def api_recognised() -> Any:
    desk = _desk()
    mine = reach()
    return jsonify(faces=[f for f in desk.recognised_json() if (c := desk.book.card(f["id"])) and desk.card_within(c, mine)])


@bp.post("/api/recognised/<int:face_id>/hold")
def api_hold(face_id: int) -> Any:
    desk = _desk()
    card_or_404(face_id)
    return jsonify(desk.hold(face_id, current_user() or ""))


@bp.post("/api/skipped/reopen")
def api_reopen_skipped() -> Any:
    desk = _desk()
    return jsonify(reopened=desk.book.reopen_skipped())


@bp.post("/api/refresh")
def api_refresh() -> Any:
    desk = _desk()
    return jsonify(started=desk.start_import(), importing=desk.importing)


@bp.post("/api/check")
def api_check() -> Any:
    desk = _desk()
    files = request.files.getlist("photos")
    if not files:
        return jsonify(error="no photos in the request"), 400
    scope = request.form.get("scope", "")
    mine = reach()
    if mine:  # a school's account checks against its school (the default) or the whole district, never another's
        from optout_guard.optout_list import school_key
        from optout_guard.scope import DISTRICT

        allowed_scopes = [s for s in desk.scopes() if school_key(s) in mine]
        if not scope and allowed_scopes:
            scope = allowed_scopes[0]
        elif scope.strip().lower() != DISTRICT and school_key(scope) not in mine:
            return jsonify(error="this account checks photos against its own school or the whole district"), 403
    try:
        names = may_see_names()
        results = [desk.check_upload(f.filename or "photo", f.read(), current_user() or "", scope, names) for f in files]
    except ConfigError as exc:  # an unknown scope: nothing checked against an empty gallery
        return jsonify(error=str(exc)), 400
    if mine:  # another school's students: their id (the verdict needs it), no name, no reference photo
        for face in (f for r in results for f in r["faces"]):
            for c in face["candidates"]:
                if not desk.student_within(c["student_id"], mine):
                    c.pop("name", None)
                    c["references"] = []
    return jsonify(results=results)


@bp.get("/api/scopes")
def api_scopes() -> Any:
    desk = _desk()
    from optout_guard.optout_list import school_key

    mine = reach()
    return jsonify(scopes=[s for s in desk.scopes() if not mine or school_key(s) in mine])


@bp.post("/api/students")
def api_add_student() -> Any:
    desk = _desk()
    options = desk.options
    # Adding a student changes who is protected: on the network only accounts trusted with names may.
    if options.lan and not may_see_names():
        return jsonify(error="this account may not add students; ask the privacy officer"), 403
    if reach():
        from optout_guard.optout_list import school_key

        if school_key(request.form.get("school", "")) not in reach():
            return jsonify(error="this account adds students of its own school only (give the school)"), 403
    photos = [(f.filename or "photo", f.read()) for f in request.files.getlist("photos")]
    try:
        return jsonify(desk.add_student(dict(request.form), photos, current_user() or ""))
    except (ValueError, OptoutGuardError) as exc:
        return jsonify(error=str(exc)), 400


@bp.post("/api/cards/<int:card_id>/decide")
def api_decide(card_id: int) -> Any:
    desk = _desk()
    options = desk.options
    card_or_404(card_id)
    body = request.get_json(silent=True) or {}
    answer = {"student": str(body.get("student_id") or ""), "unnamed": UNNAMED, "blurred": BLURRED}.get(
        str(body.get("answer")), NONE
    )
    ignored = body.get("answer") == "ignore"  # not a student: cleared like "none", said as "ignored"
    if body.get("answer") == "skip":
        desk.book.skip(card_id)
        return jsonify(skipped=card_id)
    if body.get("answer") not in ("student", "none", "ignore", "unnamed", "blurred") or (
        body.get("answer") == "student" and not answer
    ):
        return jsonify(error="answer must be student (with student_id), unnamed, none, ignore, blurred or skip"), 400
    if body.get("add_reference") and options.lan and not may_see_names():
        # A new reference photo changes who is protected: the same right as adding a student.
        return jsonify(error="this account may not add reference photos; ask the privacy officer"), 403
    together = body.get("same_child") or []
    if not isinstance(together, list) or not all(isinstance(i, int) for i in together):
        return jsonify(error="same_child: the card ids of the same child the page showed, as a list of numbers"), 400
    for i in together:
        card_or_404(i)
    try:
        if together:  # the same child in other photos of the event, answered with this card
            return jsonify(desk.decide_same_child(
                card_id, answer, current_user() or "", together, bool(body.get("confirm")), ignored=ignored,
                add_reference=bool(body.get("add_reference")),
            ))  # fmt: skip
        return jsonify(desk.decide(card_id, answer, current_user() or "", bool(body.get("add_reference")),
                                   bool(body.get("confirm")), ignored=ignored))  # fmt: skip
    except FileNotFoundError as exc:  # the photo is gone since its card was made
        return jsonify(error=f"the photo is not there any more: {exc}"), 409


@bp.post("/api/decisions/<int:decision_id>/undo")
def api_undo(decision_id: int) -> Any:
    desk = _desk()
    options = desk.options
    row = desk.book.db.execute("SELECT face_id FROM decisions WHERE id=?", (decision_id,)).fetchone()
    if row is None:
        abort(404)
    card_or_404(int(row[0]))
    # On the network, an account undoes its own decisions; others' only with the right to see names.
    if options.lan and not may_see_names() and desk.book.decision_user(decision_id) != (current_user() or ""):
        return jsonify(error="this account may undo only its own decisions"), 403
    return jsonify(desk.undo(decision_id, current_user() or ""))


@bp.get("/face/<int:card_id>.jpg")
def face(card_id: int) -> Any:
    desk = _desk()
    card = card_or_404(card_id)
    try:
        return Response(desk.face_crop(card), mimetype="image/jpeg")
    except (FileNotFoundError, ImageRejected):
        abort(404)


@bp.get("/photo/<sha>/<kind>.jpg")
def photo(sha: str, kind: str) -> Any:
    desk = _desk()
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha) or kind not in ("marked", "original"):
        abort(404)
    info = desk.book.photo(sha)
    if info is None:
        abort(404)
    photo_or_404(sha)
    path = desk.allowed(info["marked"]) if kind == "marked" and info["marked"] else desk.allowed(info["path"])
    if path is None:
        abort(404)
    if kind == "marked":
        return send_file(path, mimetype="image/jpeg", max_age=0)
    try:
        return Response(desk.thumbnail(path, 1600), mimetype="image/jpeg")
    except ImageRejected:
        abort(404)


@bp.get("/clip/<sha>")
def clip(sha: str) -> Any:
    """A clip the desk asks about, for the browser to play (range requests: seeking works)."""
    desk = _desk()
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        abort(404)
    info = desk.book.photo(sha)
    path = desk.allowed(info["path"]) if info else None
    if path is None:
        abort(404)
    photo_or_404(sha)
    kind = {".webm": "video/webm", ".mov": "video/quicktime"}.get(path.suffix.lower(), "video/mp4")
    return send_file(path, mimetype=kind, conditional=True, max_age=0)


@bp.get("/postable/<sha>")
def postable(sha: str) -> Any:
    desk = _desk()
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        abort(404)
    path = desk.postable_copy(sha)
    if path is None:
        abort(404)
    photo_or_404(sha)
    return send_file(path, as_attachment=True, download_name=f"fit-to-post{path.suffix}", max_age=0)


@bp.get("/reference/<student_id>/<int:n>.jpg")
def reference(student_id: str, n: int) -> Any:
    desk = _desk()
    if not desk.student_within(student_id, reach()):
        abort(404)
    refs = desk.reference_photos(student_id)
    if n >= len(refs):
        abort(404)
    try:
        return Response(desk.thumbnail(refs[n], REFERENCE_PX), mimetype="image/jpeg")
    except ImageRejected:
        abort(404)


def serve(desk: Desk, on_ready: Callable[[str], None] | None = None) -> None:
    """Run the desk with waitress (a production WSGI server, pure Python) until interrupted."""
    from waitress.server import create_server

    app = create_app(desk)
    server = create_server(app, host=desk.options.host, port=desk.options.port, threads=4, max_request_body_size=MAX_UPLOAD_BYTES)
    if on_ready:
        on_ready(f"http://{desk.options.host}:{server.effective_port}/")
    server.run()
