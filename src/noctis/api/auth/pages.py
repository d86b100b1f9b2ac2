"""The few server-rendered pages: the login form and the messages around it."""

from __future__ import annotations

import base64
import hashlib
from html import escape

_STYLE = """
body{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;
background:#090c29;color:#e1e5ff;font:16px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif}
main{width:22rem;padding:2rem 2.2rem;background:#151a3d;border-radius:10px;
box-shadow:0 8px 30px rgba(0,0,0,.45)}
h1{margin:0 0 .2rem;font-size:1.5rem;letter-spacing:.04em}
p.sub{margin:0 0 1.4rem;color:#9aa3d9;font-size:.9rem}
label{display:block;margin:.8rem 0 .3rem;font-size:.9rem;color:#c3c9f0}
input{box-sizing:border-box;width:100%;padding:.6rem .7rem;border:1px solid #3a4280;
border-radius:6px;background:#0b0f2e;color:#fff;font-size:1rem}
input:focus{outline:2px solid #5acce6;border-color:transparent}
button,a.button{display:block;box-sizing:border-box;width:100%;margin-top:1.3rem;padding:.65rem;
border:0;border-radius:6px;background:#5acce6;color:#090c29;font-weight:600;font-size:1rem;
text-align:center;text-decoration:none;cursor:pointer}
a.button{background:transparent;color:#5acce6;border:1px solid #5acce6}
.error{margin:0 0 1rem;padding:.6rem .8rem;border-radius:6px;background:#4a1020;color:#ffb3c1}
.note{margin-top:1.2rem;color:#9aa3d9;font-size:.8rem}
code{background:#0b0f2e;padding:.1rem .3rem;border-radius:4px}
a{color:#5acce6}
"""

# The pages' Content-Security-Policy allows this one stylesheet by its hash, nothing inline.
STYLE_HASH = "sha256-" + base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()


def page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )


def login_page(
    *,
    next_url: str,
    error: str | None = None,
    username: str = "",
    oidc_name: str | None = None,
) -> str:
    alert = f"<p class=error role=alert id=login-error>{escape(error)}</p>" if error else ""
    sso = ""
    if oidc_name:
        href = "/auth/oidc/login?" + _query(next_url)
        sso = f'<a class=button id=sso href="{escape(href)}">Sign in with {escape(oidc_name)}</a>'
    body = f"""<h1>Noctis</h1><p class=sub>Picture archive &middot; sign in to continue</p>
{alert}<form method=post action=/login>
<input type=hidden name=next value="{escape(next_url)}">
<label for=username>User name</label>
<input id=username name=username autocomplete=username required autofocus
 value="{escape(username)}">
<label for=password>Password</label>
<input id=password name=password type=password autocomplete=current-password required>
<button type=submit id=sign-in>Sign in</button></form>{sso}"""
    return page("Sign in - Noctis", body)


def message_page(title: str, message: str, *, link: str = "/login", link_text: str = "") -> str:
    more = f'<a class=button href="{escape(link)}">{escape(link_text)}</a>' if link_text else ""
    return page(f"{title} - Noctis", f"<h1>{escape(title)}</h1><p>{escape(message)}</p>{more}")


def _query(next_url: str) -> str:
    from urllib.parse import urlencode

    return urlencode({"next": next_url})
