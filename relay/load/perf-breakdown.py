#!/usr/bin/env python3
"""Groups a perf profile of the relay over a connect burst into the steps of
a connect. Kernel time is attributed by system call (children of
__x64_sys_*), user time by symbol prefix."""
import re, subprocess, sys
data = sys.argv[1]; us_per_conn = float(sys.argv[2])
def rows(args):
    out = subprocess.run(["perf", "report", "-i", data, "--stdio"] + args, capture_output=True, text=True).stdout
    for line in out.splitlines():
        m = re.match(r"\s+([\d.]+)%\s+(?:([\d.]+)%\s+)?\[(.)\]\s+(.*?)\s*$", line)
        if m: yield float(m.group(1)), m.group(3), m.group(4).split("  ")[0]
kernel = {}
for pct, kind, sym in rows(["--children", "--sort", "symbol", "-g", "none"]):
    m = re.match(r"(?:__x64_sys_|__sys_|do_|ksys_)(\w+)$", sym)
    if m: kernel[m.group(1)] = max(pct, kernel.get(m.group(1), 0))
user = {}
cats = [("hyper/http (head parse, response)", r"hyper|http::|httparse|h1::"),
        ("axum/tower (routing)", r"axum|tower"),
        ("auth (token check)", r"auth::|jsonwebtoken|base64|sha1|Authenticator"),
        ("admission (guard)", r"guard::"),
        ("hub: session, join, welcome, presence", r"edgewire::hub|edgewire::broker|Event::|protocol::"),
        ("transport (ws/sse, driver)", r"edgewire::transport|edgewire::server|sse_direct"),
        ("tokio (tasks, timers, reactor)", r"tokio"),
        ("allocator", r"^_?mi_|mi_free|malloc|mimalloc"),
        ("memcpy/memcmp", r"memmove|memcpy|memcmp|memset"),
        ("serde_json", r"serde"),
        ("hashing", r"hash|Hasher|sip")]
total_user = 0
for pct, kind, sym in rows(["--no-children", "--sort", "symbol", "-g", "none"]):
    if kind != ".": continue
    total_user += pct
    for name, pat in cats:
        if re.search(pat, sym):
            user[name] = user.get(name, 0) + pct; break
    else:
        user["other user"] = user.get("other user", 0) + pct
teardown = kernel.get("shutdown", 0) + kernel.get("close", 0)
scale = us_per_conn / (100 - teardown)
print(f"relay CPU per connection {us_per_conn} us (teardown {teardown:.1f}% of samples left out)")
for k in ["accept4", "recvfrom", "read", "writev", "write", "sendto", "epoll_wait", "epoll_ctl", "futex", "getrandom", "setsockopt", "madvise", "munmap", "mmap"]:
    if k in kernel: print(f"  kernel {k:12s} {kernel[k]*scale:6.1f} us  ({kernel[k]:.1f}%)")
faults = 0
for pct, kind, sym in rows(["--children", "--sort", "symbol", "-g", "none"]):
    if sym == "asm_exc_page_fault": faults = pct
print(f"  kernel page faults   {faults*scale:6.1f} us  ({faults:.1f}%)")
for name, pct in sorted(user.items(), key=lambda x: -x[1]):
    print(f"  user {name:38s} {pct*scale:5.1f} us  ({pct:.1f}%)")
print(f"  user total {total_user*scale:.1f} us ({total_user:.1f}%)")
