"""The few HTML pages of the authorization server: login, patient picker, consent, EHR launcher, errors.

Plain server-rendered forms, no script: every value is HTML-escaped, and each form carries the pending
authorization's unguessable id, which is all the state a browser holds.
"""

from __future__ import annotations

from html import escape

from smart_auth.db import Client

_STYLE = ("body{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem;color:#222}"
          "label{display:block;margin:.6rem 0}input[type=text],input[type=password]{width:100%;padding:.4rem}"
          "button{padding:.5rem 1.2rem;margin-right:.5rem}.err{color:#a00}")


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{escape(title)}</h1>{body}</body></html>")


def error_page(message: str) -> str:
    return _page("Authorization error", f"<p class=err id=error>{escape(message)}</p>")


def login_page(pending: str, client: Client, error: str = "") -> str:
    err = f"<p class=err>{escape(error)}</p>" if error else ""
    return _page("Sign in", f"""<p><b>{escape(client.name)}</b> asks to access your health records.</p>{err}
<form method=post action="/auth/login">
<input type=hidden name=pending value="{escape(pending)}">
<label>User name <input type=text name=username autocomplete=username autofocus></label>
<label>Password <input type=password name=password autocomplete=current-password></label>
<button type=submit>Sign in</button></form>""")


def patient_page(pending: str, patients: list[tuple[str, str]]) -> str:
    options = "".join(f'<label><input type=radio name=patient value="{escape(pid)}"> {escape(name)} '
                      f'(Patient/{escape(pid)})</label>' for pid, name in patients)
    return _page("Choose a patient", f"""<form method=post action="/auth/patient">
<input type=hidden name=pending value="{escape(pending)}">{options}
<label>Or patient id <input type=text name=patient_id></label>
<button type=submit>Continue</button></form>""")


def consent_page(pending: str, client: Client, scopes: list[str], patient: str | None) -> str:
    boxes = "".join(f'<label><input type=checkbox name=scope value="{escape(s)}" checked> {escape(s)}</label>'
                    for s in scopes)
    about = f"<p>Patient: Patient/{escape(patient)}</p>" if patient else ""
    return _page("Allow access?", f"""<p><b>{escape(client.name)}</b> asks for these permissions; untick any you do
not want to give.</p>{about}
<form method=post action="/auth/consent">
<input type=hidden name=pending value="{escape(pending)}">{boxes}
<button type=submit name=decision value=allow>Allow</button>
<button type=submit name=decision value=deny>Deny</button></form>""")


def launcher_page(clients: list[Client], error: str = "") -> str:
    err = f"<p class=err>{escape(error)}</p>" if error else ""
    options = "".join(f'<option value="{escape(c.client_id)}">{escape(c.name)}</option>'
                      for c in clients if c.launch_url)
    return _page("EHR launcher", f"""<p>Start a registered SMART app for a patient, as an EHR would.</p>{err}
<form method=post action="/auth/launcher">
<label>User name <input type=text name=username></label>
<label>Password <input type=password name=password></label>
<label>App <select name=client_id>{options}</select></label>
<label>Patient id <input type=text name=patient></label>
<label>Encounter id (optional) <input type=text name=encounter></label>
<button type=submit>Launch</button></form>""")
