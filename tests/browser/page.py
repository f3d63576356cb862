#!/usr/bin/env python3
"""Drive guardwire's management page in the system Chromium (Playwright, headless).

One step per run; every step logs in first and leaves a screenshot:

    page.py --url URL --token TOKEN --shots DIR STEP [step args]

Steps: login, expect-flow, set-mode, rules-typo, rules-push, lang-zh, usage, rollback
(see README.md next to this file). Exit 0 on success, 1 on a failed check,
2 on bad usage, 124 when the overall timeout (--timeout, default 30 s) expires.
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

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
WAIT_MS = 10_000  # how long a single expectation may take


class StepFailed(Exception):
    pass


class OverallTimeout(Exception):
    pass


def log(msg):
    print(f"page.py: {msg}", file=sys.stderr, flush=True)


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


def generation(page):
    """The current rules generation shown by #rules-generation, once it is loaded."""
    def read():
        txt = (page.text_content("#rules-generation") or "").strip()
        return txt if txt.isdigit() else None
    return int(poll("#rules-generation to show a number", read))


def rules_state(page, states):
    """Wait until #rules-status carries one of `states` in its data-state."""
    def read():
        st = page.get_attribute("#rules-status", "data-state")
        return st if st in states else None
    return poll(f"#rules-status data-state in {states}", read)


def rules_errors(page):
    return page.eval_on_selector_all(
        "#rules-errors li", "els => els.map(e => ({line: e.dataset.line ?? null, text: e.textContent}))")


def set_editor(page, path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    page.fill("#rules-editor", text)


def traffic_rows(page):
    return page.eval_on_selector_all("#traffic tbody tr", """rows => rows.map(r => ({
        seq: Number(r.dataset.seq), workload: r.dataset.workload, src: r.dataset.src, dst: r.dataset.dst,
        action: r.dataset.action, verdict: r.dataset.verdict, updated_at: Number(r.dataset.updatedAt),
        cells: Array.from(r.cells, c => c.innerText.replace(/\s+/g, " ").trim()) }))""")


def dst_matches(want, dst):
    """Exact match; when `want` has no port, compare the address part only."""
    if dst == want:
        return True
    if dst.startswith("["):                       # [v6]:port
        return dst[1:].split("]", 1)[0] == want.strip("[]")
    return ":" not in want and dst.rsplit(":", 1)[0] == want


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


def step_expect_flow(page, a):
    tab(page, "traffic")
    if a.workload:
        page.fill("#f-workload", a.workload)
        page.click("#f-apply")
    since = a.since_ms

    def find():
        rows = [r for r in traffic_rows(page)
                if dst_matches(a.dst, r["dst"] or "") and r["action"] == a.action
                and (not a.workload or r["workload"] == a.workload)]
        if since is not None:
            rows = [r for r in rows if r["updated_at"] >= since - 1000]
        if not rows:
            return None
        # With --since-ms the earliest matching record is the one that measures the delay.
        return min(rows, key=lambda r: r["updated_at"]) if since is not None else rows[0]

    try:
        row = poll(f"a row with dst={a.dst} action={a.action}"
                   + (f" workload={a.workload}" if a.workload else "")
                   + (f" updated_at>={since - 1000}" if since is not None else ""), find)
    except StepFailed:
        near = [r for r in traffic_rows(page) if dst_matches(a.dst, r["dst"] or "")][:5]
        log("rows with that dst: " + json.dumps(near))
        raise
    if since is not None:
        delay = row["updated_at"] - since
        row["delay_ms"] = delay
        if delay > a.within * 1000:
            raise StepFailed(f"row found but updated_at is {delay} ms after --since-ms "
                             f"(allowed {a.within:g} s): {json.dumps(row)}")
    print(json.dumps(row))


def step_set_mode(page, a):
    tab(page, "workloads")
    row = page.locator(f"#workloads tbody tr[data-name={json.dumps(a.workload)}]")
    try:
        row.wait_for(state="visible", timeout=WAIT_MS)
    except PlaywrightTimeout:
        raise StepFailed(f"no workload row {a.workload!r}") from None
    before = row.locator(".mode-current").text_content().strip()
    row.locator("select.mode").select_option(a.mode)
    row.locator("button.mode-apply").click()
    poll(f".mode-current of {a.workload} to show {a.mode}",
         lambda: row.locator(".mode-current").text_content().strip() == a.mode)
    print(json.dumps({"workload": a.workload, "from": before, "to": a.mode}))


def step_rules_typo(page, a):
    tab(page, "rules")
    gen0 = generation(page)
    set_editor(page, a.text_file)
    page.click("#rules-validate")
    st = rules_state(page, {"valid", "invalid"})
    if st != "invalid":
        raise StepFailed(f"validate accepted the text ({page.text_content('#rules-status').strip()!r})")
    errs = rules_errors(page)
    if not any(e["line"] == str(a.line) for e in errs):
        raise StepFailed(f"no error on line {a.line}; errors shown: {json.dumps(errs, ensure_ascii=False)}")
    log(f"validate: {json.dumps(errs, ensure_ascii=False)}")
    page.click("#rules-push")
    rules_state(page, {"push-failed", "pushed"})
    if page.get_attribute("#rules-status", "data-state") != "push-failed":
        raise StepFailed("push of the bad text succeeded")
    push_errs = rules_errors(page)
    shown = (page.text_content("#rules-status") or "").strip()
    if not push_errs and not shown:
        raise StepFailed("push failed but no error is shown")
    gen1 = generation(page)
    if gen1 != gen0:
        raise StepFailed(f"#rules-generation changed from {gen0} to {gen1} after a refused push")
    print(json.dumps({"generation": gen0, "validate_errors": errs, "push_errors": push_errs,
                      "status": shown}, ensure_ascii=False))


def step_rules_push(page, a):
    tab(page, "rules")
    gen0 = generation(page)
    set_editor(page, a.text_file)
    page.click("#rules-validate")
    if rules_state(page, {"valid", "invalid"}) != "valid":
        raise StepFailed("validate refused the text: "
                         + json.dumps(rules_errors(page) or page.text_content("#rules-status"), ensure_ascii=False))
    if rules_errors(page):
        raise StepFailed(f"errors listed for valid text: {rules_errors(page)}")
    page.click("#rules-push")
    if rules_state(page, {"pushed", "push-failed"}) != "pushed":
        raise StepFailed("push refused: " + json.dumps(rules_errors(page) or page.text_content("#rules-status"),
                                                       ensure_ascii=False))
    gen1 = poll(f"#rules-generation to increase from {gen0}", lambda: generation(page) > gen0 and generation(page))
    print(gen1)


def step_lang_zh(page, a):
    tab(page, "traffic")
    action = page.locator("#traffic th[data-col=action]")
    updated = page.locator("#traffic th[data-col=updated_at]")
    page.select_option("#lang", "zh")
    poll("header 动作 / 更新于", lambda: action.text_content().strip() == "动作"
         and updated.text_content().strip() == "更新于", timeout_ms=3000)
    page.screenshot(path=os.path.join(a.shots, "lang-zh-zh.png"), full_page=True)
    page.select_option("#lang", "en")
    poll("header back in English", lambda: action.text_content().strip() == "Action", timeout_ms=3000)
    print(json.dumps({"zh": ["动作", "更新于"], "en": action.text_content().strip()}, ensure_ascii=False))


def step_usage(page, a):
    tab(page, "usage")
    page.select_option("#usage-window", "1")
    n = poll("at least one rect.bar in #usage-chart svg",
             lambda: page.locator("#usage-chart svg rect.bar").count())
    print(json.dumps({"bars": n}))


def step_rollback(page, a):
    tab(page, "rules")
    gen0 = generation(page)
    row = page.locator(f"#rules-history tbody tr[data-generation='{a.generation}']")
    try:
        row.wait_for(state="visible", timeout=WAIT_MS)
    except PlaywrightTimeout:
        raise StepFailed(f"no history row for generation {a.generation}") from None
    btn = row.locator("button.rollback")
    if btn.count() == 0:
        raise StepFailed(f"generation {a.generation} has no rollback button (is it the current one?)")
    btn.click()
    page.wait_for_selector("#confirm-ok", state="visible")
    page.click("#confirm-ok")
    if rules_state(page, {"rolled-back", "rollback-failed"}) != "rolled-back":
        raise StepFailed("rollback failed: " + page.text_content("#rules-status").strip())
    gen1 = poll(f"#rules-generation to increase from {gen0}", lambda: generation(page) > gen0 and generation(page))
    print(gen1)


STEPS = {
    "login": step_login, "expect-flow": step_expect_flow, "set-mode": step_set_mode,
    "rules-typo": step_rules_typo, "rules-push": step_rules_push, "lang-zh": step_lang_zh,
    "usage": step_usage, "rollback": step_rollback,
}


def parse_args():
    # The global options are accepted before or after the step name.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS,
                        help="URL of the node's page, e.g. http://127.0.0.1:8080/")
    common.add_argument("--token", default=argparse.SUPPRESS)
    common.add_argument("--shots", default=argparse.SUPPRESS, help="directory for the screenshots")
    common.add_argument("--timeout", type=float, default=argparse.SUPPRESS,
                        help="overall timeout in seconds (default 30)")
    p = argparse.ArgumentParser(parents=[common],
                                description="Drive guardwire's page in headless Chromium, one step per run.")
    sub = p.add_subparsers(dest="step", required=True, metavar="STEP")
    step = lambda name, help: sub.add_parser(name, parents=[common], help=help)  # noqa: E731
    step("login", help="a wrong token is refused, the right one shows #whoami")
    s = step("expect-flow", help="a traffic row with this dst and action appears")
    s.add_argument("--dst", required=True, help="ip:port as in the record (or ip alone)")
    s.add_argument("--action", required=True, choices=["allow", "deny"])
    s.add_argument("--within", type=float, default=2, help="max seconds from --since-ms to updated_at")
    s.add_argument("--workload")
    s.add_argument("--since-ms", type=int, dest="since_ms", help="unix ms when the traffic was sent")
    s = step("set-mode", help="switch a workload's steering mode")
    s.add_argument("--workload", required=True)
    s.add_argument("--mode", required=True, choices=["off", "mirror", "inline"])
    s = step("rules-typo", help="bad rules: an error on --line, push refused, generation unchanged")
    s.add_argument("--text-file", required=True, dest="text_file")
    s.add_argument("--line", required=True, type=int)
    s = step("rules-push", help="valid rules: validate, push, generation increases")
    s.add_argument("--text-file", required=True, dest="text_file")
    step("lang-zh", help="Chinese labels (动作, 更新于), then back to English")
    step("usage", help="1 s windows, at least one bar in the chart")
    s = step("rollback", help="roll back to a generation from the history")
    s.add_argument("--generation", required=True, type=int)
    a = p.parse_args()
    missing = [f"--{k}" for k in ("url", "token", "shots") if not hasattr(a, k)]
    if missing:
        p.error("missing " + ", ".join(missing))
    if not hasattr(a, "timeout"):
        a.timeout = 30.0
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

    profile = tempfile.mkdtemp(prefix="gw-page-")
    code = 1
    try:
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                viewport={"width": 1440, "height": 900}, locale="en-US")
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            page.set_default_timeout(WAIT_MS)
            page.on("pageerror", lambda e: log(f"page error: {e}"))
            page.on("console", lambda m: m.type == "error" and not m.location.get("url", "").endswith("/favicon.ico")
                    and log(f"console error: {m.text}"))
            try:
                if a.step != "login":
                    login(page, a.url, a.token)
                STEPS[a.step](page, a)
                page.screenshot(path=os.path.join(a.shots, f"{a.step}.png"), full_page=True)
                log(f"ok {a.step}")
                code = 0
            except (StepFailed, OverallTimeout, PlaywrightError, OSError) as e:
                signal.setitimer(signal.ITIMER_REAL, 0)
                log(f"FAIL {a.step}: {e}")
                code = 124 if isinstance(e, OverallTimeout) else 1
                try:
                    page.screenshot(path=os.path.join(a.shots, f"{a.step}-failed.png"), full_page=True, timeout=5000)
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
