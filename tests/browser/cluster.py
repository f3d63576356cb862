#!/usr/bin/env python3
"""Drive the guardwire controller's page in the system Chromium (Playwright, headless).

One step per run; every step logs in first and leaves a screenshot:

    cluster.py --url URL --token TOKEN --shots DIR STEP [step args]

Steps: login, push, realized, traffic, typo, diff, conflict, rollback, viewer, lang-zh
(see README.md next to this file). Exit 0 on success, 1 on a failed check,
2 on bad usage, 124 when the overall timeout (--timeout, default 60 s) expires.
"""

import argparse
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
WAIT_MS = 10_000  # how long a single expectation may take (unless a step says otherwise)


class StepFailed(Exception):
    pass


class OverallTimeout(Exception):
    pass


def log(msg):
    print(f"cluster.py: {msg}", file=sys.stderr, flush=True)


def poll(what, fn, timeout_ms=WAIT_MS, interval=0.2):
    """Call fn() until it returns a truthy value; fail with `what` after timeout_ms."""
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise StepFailed(f"timed out after {timeout_ms / 1000:g} s waiting for {what}")
        time.sleep(interval)


def read_text(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def api(a, method, path, body=None):
    """The controller's API directly (for what another operator does meanwhile)."""
    req = urllib.request.Request(urllib.parse.urljoin(a.url, path), method=method,
                                 data=body.encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {a.token}", "Content-Type": "text/plain"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


# ---------------------------------------------------------------- page helpers

def login(page, url, token):
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_selector("#token", state="visible")
    page.fill("#token", token)
    page.click("#login-btn")
    try:
        page.wait_for_selector("#whoami", state="visible", timeout=WAIT_MS)
    except PlaywrightTimeout:
        err = page.locator("#login-error")
        msg = err.text_content() if err.is_visible() else "no error shown"
        raise StepFailed(f"login failed: #whoami did not appear ({msg.strip()})") from None
    role = page.text_content("#whoami") or ""
    if "admin" not in role and "viewer" not in role:
        raise StepFailed(f"#whoami shows no role: {role!r}")
    return role.strip()


def tab(page, name):
    page.click(f"[data-tab={name}]")
    page.wait_for_selector(f"#{name}", state="visible")


def rules_state(page, states, timeout_ms=WAIT_MS):
    """Wait until #rules-status carries one of `states` in its data-state."""
    def read():
        st = page.get_attribute("#rules-status", "data-state")
        return st if st in states else None
    return poll(f"#rules-status data-state in {sorted(states)}", read, timeout_ms)


def status_text(page):
    return (page.text_content("#rules-status") or "").strip()


def rules_errors(page):
    return page.eval_on_selector_all(
        "#rules-errors li", "els => els.map(e => ({line: e.dataset.line ?? null, text: e.textContent}))")


def open_set(page, name):
    """Rules tab, rule set `name` opened (loaded from the store, or new)."""
    tab(page, "rules")
    rules_state(page, {"loaded", "new", "idle", "load-failed"})
    page.fill("#rs-name", name)
    page.click("#rs-open")
    # Opening over edits asks first; nothing is edited yet, so no dialog.
    st = rules_state(page, {"loaded", "new", "load-failed"})
    if st == "load-failed":
        raise StepFailed(f"opening {name!r} failed: {status_text(page)}")
    rev = page.get_attribute("#rs-revision", "data-revision") or ""
    return int(rev) if rev.isdigit() else None


def revision_shown(page):
    rev = page.get_attribute("#rs-revision", "data-revision") or ""
    return int(rev) if rev.isdigit() else None


def traffic_rows(page):
    return page.eval_on_selector_all("#traffic tbody tr", """rows => rows.map(r => ({
        node: r.dataset.node, seq: r.dataset.seq, workload: r.dataset.workload, src: r.dataset.src,
        dst: r.dataset.dst, proto: r.dataset.proto, action: r.dataset.action, verdict: r.dataset.verdict,
        rule: r.dataset.rule, updated_at: Number(r.dataset.updatedAt),
        link: (r.querySelector('a[data-node-link]') || {}).href || null,
        cells: Array.from(r.cells, c => c.innerText.replace(/\\s+/g, " ").trim()) }))""")


def dst_matches(want, dst):
    """Exact match; when `want` has no port, compare the address part only."""
    if dst == want:
        return True
    if dst.startswith("["):                       # [v6]:port
        return dst[1:].split("]", 1)[0] == want.strip("[]")
    return ":" not in want and dst.rsplit(":", 1)[0] == want


def summary(page, name):
    return page.evaluate("""name => {
        const e = Array.from(document.querySelectorAll('#nodes-summary .rs-sum')).find(x => x.dataset.ruleset === name);
        return e ? {ruleset: name, revision: e.dataset.revision, realized: Number(e.dataset.realized),
                    total: Number(e.dataset.total), text: e.innerText.replace(/\\s+/g, ' ').trim()} : null;
    }""", name)


def node_rows(page):
    return page.eval_on_selector_all("#nodes-table tbody tr", """rows => rows.map(r => ({
        node: r.dataset.node, alive: r.dataset.alive === 'true', ruleset: r.dataset.ruleset,
        desired: r.dataset.desired, applied: r.dataset.applied, mismatch: r.dataset.mismatch === 'true',
        page: (r.querySelector('a[data-node-page]') || {}).href || null,
        cells: Array.from(r.cells, c => c.innerText.replace(/\\s+/g, " ").trim()) }))""")


# ---------------------------------------------------------------- steps

def step_login(page, a):
    page.goto(a.url, wait_until="domcontentloaded")
    page.wait_for_selector("#token", state="visible")
    if page.locator("#app").is_visible():
        raise StepFailed("the app is visible before login")
    page.fill("#token", "wrong-" + secrets.token_hex(8))
    page.click("#login-btn")
    try:
        page.wait_for_selector("#login-error", state="visible", timeout=WAIT_MS)
    except PlaywrightTimeout:
        raise StepFailed("a wrong token did not show #login-error") from None
    if page.locator("#whoami").is_visible():
        raise StepFailed("#whoami is visible after a wrong token")
    log(f"wrong token refused: {page.text_content('#login-error').strip()!r}")
    role = login(page, a.url, a.token)
    print(json.dumps({"whoami": role}))


def step_push(page, a):
    rev0 = open_set(page, a.set)
    page.fill("#rules-editor", read_text(a.text_file))
    page.click("#rules-validate")
    if rules_state(page, {"valid", "invalid"}) != "valid":
        raise StepFailed("validate refused the text: "
                         + json.dumps(rules_errors(page) or status_text(page), ensure_ascii=False))
    log(f"validate: {status_text(page)}")
    page.click("#rules-push")
    st = rules_state(page, {"pushed", "push-failed", "conflict"})
    if st != "pushed":
        raise StepFailed(f"push refused ({st}): "
                         + json.dumps(rules_errors(page) or status_text(page), ensure_ascii=False))
    rev1 = poll("#rs-revision to show the new revision",
                lambda: (r := revision_shown(page)) is not None and (rev0 is None or r > rev0) and r)
    if page.locator("#rules-dirty").is_visible():
        raise StepFailed("the editor still shows 'edited' after the push")
    if not page.locator(f"#rules-history tbody tr[data-revision='{rev1}']").count():
        raise StepFailed(f"no history row for the pushed revision {rev1}")
    print(json.dumps({"set": a.set, "from": rev0, "revision": rev1, "status": status_text(page)}, ensure_ascii=False))


def step_realized(page, a):
    tab(page, "nodes")
    want = f"realized on {a.count} of {a.count}"

    def done():
        s = summary(page, a.set)
        if not s or s["realized"] != a.count or s["total"] != a.count or want not in s["text"]:
            return None
        if a.revision is not None and s["revision"] != str(a.revision):
            return None
        return s

    try:
        s = poll(f"{a.set!r}: {want!r}" + (f" at revision {a.revision}" if a.revision else ""), done,
                 timeout_ms=a.within * 1000)
    except StepFailed:
        log("summary: " + json.dumps(summary(page, a.set)))
        log("nodes: " + json.dumps(node_rows(page)))
        raise
    rows = [r for r in node_rows(page) if r["ruleset"] == a.set]
    bad = [r for r in rows if r["mismatch"] or not r["alive"]]
    if len(rows) != a.count or bad:
        raise StepFailed(f"summary says {want} but the node rows disagree: {json.dumps(rows)}")
    print(json.dumps({"summary": s, "nodes": rows}, ensure_ascii=False))


def step_traffic(page, a):
    tab(page, "traffic")
    box = page.locator(f"#tr-node-list input[data-node={json.dumps(a.node)}]")
    try:
        box.wait_for(state="attached", timeout=WAIT_MS)
    except PlaywrightTimeout:
        names = page.eval_on_selector_all("#tr-node-list input", "els => els.map(e => e.value)")
        raise StepFailed(f"no checkbox for node {a.node!r} (nodes: {names})") from None
    every = page.eval_on_selector_all("#tr-node-list input", "els => els.map(e => [e.value, e.checked])")
    if not all(c for _, c in every):
        raise StepFailed(f"not every node is chosen by default: {every}")
    page.click("#tr-none")
    box.check()
    chosen = page.eval_on_selector_all("#tr-node-list input:checked", "els => els.map(e => e.value)")
    if chosen != [a.node]:
        raise StepFailed(f"chosen nodes are {chosen}, not [{a.node}]")
    if a.workload:
        page.fill("#tr-workload", a.workload)
    if a.action:
        page.select_option("#tr-action", a.action)
    if a.q:
        page.fill("#tr-q", a.q)
    page.click("#tr-apply")
    if not page.locator("#tr-auto").is_checked():
        raise StepFailed("auto-refresh is not on by default")

    def find():
        rows = traffic_rows(page)
        others = [r for r in rows if r["node"] != a.node]
        if others:
            raise StepFailed(f"rows of other nodes shown: {json.dumps(others[:3])}")
        rows = [r for r in rows if r["action"] == (a.action or "deny")
                and (not a.workload or r["workload"] == a.workload)
                and (not a.dst or dst_matches(a.dst, r["dst"] or ""))]
        return rows[0] if rows else None

    try:
        row = poll(f"a {a.action or 'deny'} record of node {a.node}"
                   + (f" workload={a.workload}" if a.workload else "") + (f" dst={a.dst}" if a.dst else ""),
                   find, timeout_ms=a.within * 1000, interval=0.3)
    except StepFailed:
        log("rows: " + json.dumps(traffic_rows(page)[:5]))
        log("banners: " + json.dumps(page.eval_on_selector_all("#tr-banners .banner", "els => els.map(e => e.innerText)")))
        raise
    failed = page.eval_on_selector_all("#tr-banners .banner[data-node]", "els => els.map(e => e.dataset.node)")
    if a.node in failed:
        raise StepFailed(f"node {a.node} is shown as failed while its record is shown")
    if not row["link"]:
        raise StepFailed(f"the record's node is not a link to the node's page: {json.dumps(row)}")
    print(json.dumps(row, ensure_ascii=False))


def step_typo(page, a):
    rev0 = open_set(page, a.set)
    page.fill("#rules-editor", read_text(a.text_file))
    page.click("#rules-validate")
    if rules_state(page, {"valid", "invalid"}) != "invalid":
        raise StepFailed(f"validate accepted the text ({status_text(page)!r})")
    errs = rules_errors(page)
    if not any(e["line"] == str(a.line) for e in errs):
        raise StepFailed(f"no error on line {a.line}; errors shown: {json.dumps(errs, ensure_ascii=False)}")
    if page.locator(f"#rules-gutter div.err[data-line='{a.line}']").count() != 1:
        raise StepFailed(f"line {a.line} is not highlighted in the gutter")
    # The editor jumped to the line: the selection is on it.
    sel_line = page.evaluate("""() => { const t = document.querySelector('#rules-editor');
        return t.value.slice(0, t.selectionStart).split('\\n').length; }""")
    if sel_line != a.line:
        raise StepFailed(f"the editor's cursor is on line {sel_line}, not {a.line}")
    page.click("#rules-push")
    if rules_state(page, {"push-failed", "pushed", "conflict"}) != "push-failed":
        raise StepFailed("push of the bad text was not refused")
    if revision_shown(page) != rev0:
        raise StepFailed(f"revision changed from {rev0} to {revision_shown(page)} after a refused push")
    print(json.dumps({"revision": rev0, "errors": errs, "status": status_text(page)}, ensure_ascii=False))


def step_diff(page, a):
    open_set(page, a.set)
    page.fill("#rules-editor", read_text(a.text_file))
    page.click("#rules-diff")
    if rules_state(page, {"diffed", "invalid"}) != "diffed":
        raise StepFailed(f"diff failed: {status_text(page)}")
    lines = page.eval_on_selector_all("#rules-diff-out span", "els => els.map(e => [e.className, e.textContent])")
    adds = [t for c, t in lines if c == "d-add"]
    dels = [t for c, t in lines if c == "d-del"]
    if not adds and not dels:
        raise StepFailed(f"no +/- lines in the diff: {lines}")
    if any(not t.startswith("+") for t in adds) or any(not t.startswith("-") for t in dels):
        raise StepFailed(f"+/- colouring does not follow the lines: {lines}")
    print(json.dumps({"added": adds, "removed": dels}, ensure_ascii=False))


def step_conflict(page, a):
    """Load the set, let someone else push meanwhile, push: 409 told, reload offered."""
    rev0 = open_set(page, a.set)
    if rev0 is None:
        raise StepFailed(f"{a.set!r} does not exist: push it first")
    page.fill("#rules-editor", (page.input_value("#rules-editor") or "") + "\n# edited in the page\n")
    code, body = api(a, "GET", f"/api/v1/rulesets/{urllib.parse.quote(a.set)}")
    if code != 200:
        raise StepFailed(f"GET the set: {code} {body}")
    code, other = api(a, "PUT", f"/api/v1/rulesets/{urllib.parse.quote(a.set)}?if_revision={body['revision']}"
                      "&origin=someone-else", body["text"] + "\n# pushed by someone else\n")
    if code != 200:
        raise StepFailed(f"the other push failed: {code} {other}")
    log(f"someone else pushed revision {other['revision']}")
    page.click("#rules-push")
    if rules_state(page, {"conflict", "pushed", "push-failed"}) != "conflict":
        raise StepFailed(f"the stale push was not refused as a conflict: {status_text(page)}")
    page.wait_for_selector("#rules-conflict", state="visible")
    banner = page.text_content("#rules-conflict-text").strip()
    shot(page, a, "conflict-banner")
    page.click("#rules-reload")
    poll("the editor to be reloaded at the other revision",
         lambda: revision_shown(page) == other["revision"] and not page.locator("#rules-conflict").is_visible())
    if "# pushed by someone else" not in page.input_value("#rules-editor"):
        raise StepFailed("the reloaded editor does not hold the other push's text")
    print(json.dumps({"loaded": rev0, "theirs": other["revision"], "banner": banner}, ensure_ascii=False))


def step_rollback(page, a):
    open_set(page, a.set)
    rev0 = revision_shown(page)
    row = page.locator(f"#rules-history tbody tr[data-revision='{a.revision}']")
    try:
        row.wait_for(state="visible", timeout=WAIT_MS)
    except PlaywrightTimeout:
        raise StepFailed(f"no history row for revision {a.revision}") from None
    btn = row.locator("button.rollback")
    if btn.count() == 0:
        raise StepFailed(f"revision {a.revision} has no rollback button (is it the current one?)")
    btn.click()
    page.wait_for_selector("#confirm-ok", state="visible")
    page.click("#confirm-ok")
    if rules_state(page, {"rolled-back", "rollback-failed"}) != "rolled-back":
        raise StepFailed("rollback failed: " + status_text(page))
    rev1 = poll(f"#rs-revision to move on from {rev0}", lambda: (r := revision_shown(page)) and r > (rev0 or 0) and r)
    first = page.get_attribute("#rules-history tbody tr:first-child", "data-revision")
    if first != str(rev1):
        raise StepFailed(f"the newest history row is {first}, not {rev1}")
    print(json.dumps({"from": rev0, "rolled_back_to": a.revision, "revision": rev1}))


def step_viewer(page, a):
    """A viewer sees the set, nodes and traffic but has no push or rollback."""
    tab(page, "rules")
    rules_state(page, {"loaded", "new"})
    for sel in ("#rules-push", "#rules-validate", "#rules-diff", "#rules-file"):
        if page.locator(sel).is_visible():
            raise StepFailed(f"{sel} is visible to a viewer")
    if page.locator("#rules-history button.rollback").count():
        raise StepFailed("a viewer is offered Rollback")
    if not page.eval_on_selector("#rules-editor", "e => e.readOnly"):
        raise StepFailed("the editor is not read only for a viewer")
    tab(page, "nodes")
    poll("the nodes table (or its empty note)", lambda: page.locator("#nodes-table tbody tr").count()
         or page.locator("#nodes-empty").is_visible())
    tab(page, "traffic")
    poll("a node to choose (or the note that there is none)", lambda: page.locator("#tr-node-list input").count()
         or page.locator("#tr-banners .banner").count())
    print(json.dumps({"viewer": True}))


def step_lang_zh(page, a):
    tab(page, "traffic")
    action = page.locator("#traffic th[data-col=action]")
    updated = page.locator("#traffic th[data-col=updated_at]")
    page.select_option("#lang", "zh")
    poll("header 动作 / 更新于", lambda: action.text_content().strip() == "动作"
         and updated.text_content().strip() == "更新于", timeout_ms=3000)
    tab(page, "nodes")
    poll("nodes tab in Chinese", lambda: page.text_content("[data-tab=nodes]").strip() == "节点", timeout_ms=3000)
    shot(page, a, "lang-zh-zh")
    page.select_option("#lang", "en")
    poll("back in English", lambda: page.text_content("[data-tab=nodes]").strip() == "Nodes", timeout_ms=3000)
    print(json.dumps({"zh": ["动作", "更新于", "节点"]}, ensure_ascii=False))


STEPS = {
    "login": step_login, "push": step_push, "realized": step_realized, "traffic": step_traffic,
    "typo": step_typo, "diff": step_diff, "conflict": step_conflict, "rollback": step_rollback,
    "viewer": step_viewer, "lang-zh": step_lang_zh,
}


def shot(page, a, name):
    page.screenshot(path=os.path.join(a.shots, f"{a.prefix}{name}.png"), full_page=True)


def parse_args():
    # The global options are accepted before or after the step name.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS, help="URL of the controller's page, e.g. http://127.0.0.1:7480/")
    common.add_argument("--token", default=argparse.SUPPRESS)
    common.add_argument("--shots", default=argparse.SUPPRESS, help="directory for the screenshots")
    common.add_argument("--shot-prefix", dest="prefix", default=argparse.SUPPRESS,
                        help="prefix of the screenshot names (default: none)")
    common.add_argument("--timeout", type=float, default=argparse.SUPPRESS,
                        help="overall timeout in seconds (default 60)")
    p = argparse.ArgumentParser(parents=[common],
                                description="Drive the controller's page in headless Chromium, one step per run.")
    sub = p.add_subparsers(dest="step", required=True, metavar="STEP")
    step = lambda name, help: sub.add_parser(name, parents=[common], help=help)  # noqa: E731
    step("login", help="a wrong token is refused, the right one shows #whoami")
    s = step("push", help="open a rule set, type the text, validate, push; prints the new revision")
    s.add_argument("--set", default="default")
    s.add_argument("--text-file", required=True, dest="text_file")
    s = step("realized", help='nodes tab: the set shows "realized on N of N"')
    s.add_argument("--set", default="default")
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--revision", type=int, help="and at this revision")
    s.add_argument("--within", type=float, default=30, help="seconds to wait (default 30)")
    s = step("traffic", help="traffic tab, only --node chosen: a record with the filters appears")
    s.add_argument("--node", required=True)
    s.add_argument("--workload")
    s.add_argument("--action", default="deny")
    s.add_argument("--q")
    s.add_argument("--dst", help="ip:port as in the record (or ip alone)")
    s.add_argument("--within", type=float, default=20, help="seconds to wait (default 20)")
    s = step("typo", help="bad rules: error on --line, highlighted and jumped to; push refused")
    s.add_argument("--set", default="default")
    s.add_argument("--text-file", required=True, dest="text_file")
    s.add_argument("--line", required=True, type=int)
    s = step("diff", help="the editor's text against the set: +/- lines coloured")
    s.add_argument("--set", default="default")
    s.add_argument("--text-file", required=True, dest="text_file")
    s = step("conflict", help="someone else pushes meanwhile: 409 told, reload offered")
    s.add_argument("--set", default="default")
    s = step("rollback", help="roll the set back to a revision of its history")
    s.add_argument("--set", default="default")
    s.add_argument("--revision", required=True, type=int)
    step("viewer", help="with a viewer token: no push, validate, diff or rollback; read-only editor")
    step("lang-zh", help="Chinese labels (动作, 更新于, 节点), then back to English")
    a = p.parse_args()
    missing = [f"--{k}" for k in ("url", "token", "shots") if not hasattr(a, k)]
    if missing:
        p.error("missing " + ", ".join(missing))
    if not hasattr(a, "timeout"):
        a.timeout = 60.0
    if not hasattr(a, "prefix"):
        a.prefix = ""
    return a


def main():
    a = parse_args()
    os.makedirs(a.shots, exist_ok=True)

    # Overall timeout: SIGALRM interrupts the step (a failure screenshot is still attempted);
    # a watchdog thread hard-exits a few seconds later if even that hangs.
    def on_alarm(signum, frame):
        raise OverallTimeout(f"overall timeout of {a.timeout:g} s expired")
    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, a.timeout)

    def hard_exit():
        log(f"FAIL {a.step}: overall timeout of {a.timeout:g} s expired (hard exit)")
        os._exit(124)
    watchdog = threading.Timer(a.timeout + 8, hard_exit)
    watchdog.daemon = True
    watchdog.start()

    profile = tempfile.mkdtemp(prefix="gw-cluster-page-")
    code = 1
    try:
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                viewport={"width": 1440, "height": 900}, locale="en-US")
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            page.set_default_timeout(WAIT_MS)
            page.on("pageerror", lambda e: log(f"page error: {e}"))
            # The API's 4xx answers (a refused push, a set not there yet) are shown by the
            # page itself; Chromium also logs each one as a console error.
            page.on("console", lambda m: m.type == "error" and not m.location.get("url", "").endswith("/favicon.ico")
                    and "the server responded with a status of 4" not in m.text
                    and log(f"console error: {m.text}"))
            try:
                if a.step != "login":
                    login(page, a.url, a.token)
                STEPS[a.step](page, a)
                shot(page, a, a.step)
                log(f"ok {a.step}")
                code = 0
            except (StepFailed, OverallTimeout, PlaywrightError, OSError) as e:
                signal.setitimer(signal.ITIMER_REAL, 0)
                log(f"FAIL {a.step}: {e}")
                code = 124 if isinstance(e, OverallTimeout) else 1
                try:
                    page.screenshot(path=os.path.join(a.shots, f"{a.prefix}{a.step}-failed.png"), full_page=True,
                                    timeout=5000)
                except Exception as e2:  # noqa: BLE001 - best effort
                    log(f"(no failure screenshot: {e2})")
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                ctx.close()
    except OverallTimeout as e:
        log(f"FAIL {a.step}: {e}")
        code = 124
    except PlaywrightError as e:
        log(f"FAIL {a.step}: browser: {e}")
        code = 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        shutil.rmtree(profile, ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
