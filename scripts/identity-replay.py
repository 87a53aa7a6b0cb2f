"""Replays the attacks of issue 26 (SPEC 10) against a running service on MongoDB + Redis, and
prints what each got: the spellings of one email, guesses spread over them, the update's current
password, and a crowd of strangers against an owner with a device token.

Start the service with LOGIN_MAX_FAILURES=5 LOGIN_MAX_FAILURES_PER_ACCOUNT=10 AUTH_RATE_LIMIT=0 on
a fresh database, then:
    .venv/bin/python scripts/identity-replay.py PORT MONGODB_URI DATABASE
It sends from 127.0.0.1-127.0.0.60 (loopback addresses on Linux).
"""
import collections, http.client, json, sys

import pymongo

BASE_HOST, BASE_PORT = "127.0.0.1", int(sys.argv[1])
MONGO, DB = sys.argv[2], sys.argv[3]

def call(method, path, body=None, token=None, source="127.0.0.1"):
    conn = http.client.HTTPConnection(BASE_HOST, BASE_PORT, timeout=30, source_address=(source, 0))
    headers = {"content-type": "application/json"}
    if token: headers["authorization"] = "Bearer " + token
    conn.request(method, path, json.dumps(body) if body is not None else None, headers)
    r = conn.getresponse(); data = r.read(); conn.close()
    return r.status, (json.loads(data) if data else None)

def tally(statuses):
    return ", ".join(f"{n}x{s}" for s, n in collections.Counter(statuses).items())

pw, wrong = "correct-horse-9", "wrong-horse-99"
s, b = call("POST", "/auth/register", {"username": "sam_ross", "email": "sam.ross@x.io", "password": pw})
uid = b["data"]["user"]["_id"]; print("register sam.ross@x.io:", s)
spellings = ["sam.ross@x.io", "SAM.ROSS@X.IO", "\u017fam.ross@x.io", "sam.ro\u00df@x.io", "sam.ro\u017fs@x.io",
             "\u017fam.ro\u00df@x.io".replace("\u00df", "\u017fs"), "Sam.Ro\u1e9e@x.io", "\uff53am.ross@x.io", "sam.ros\u017f@X.io"]
print("spellings:", [x.encode("unicode_escape").decode() for x in spellings])
for n, sp in enumerate(spellings):
    s, _ = call("POST", "/auth/register", {"username": f"sam_{n}", "email": sp, "password": pw})
    print(f"  register {sp.encode('unicode_escape').decode()}: {s}")
statuses = []
for sp in spellings:
    for _ in range(5):
        statuses.append(call("POST", "/auth/login", {"email": sp, "password": wrong})[0])
print("45 wrong guesses from 127.0.0.1 through 9 spellings:", tally(statuses))
for sp in ["sam.ross@x.io", "\u017fam.ro\u00df@x.io"]:
    s, b = call("POST", "/auth/login", {"email": sp, "password": pw})
    print(f"right password via {sp.encode('unicode_escape').decode()}: {s} {b.get('error') if b else ''}")
db = pymongo.MongoClient(MONGO)[DB]
print("audit auth.login.failure on the victim's id:", db.audit_log.count_documents({"user_id": uid, "action": "auth.login.failure"}),
      "by outcome:", dict(collections.Counter(d["outcome"] for d in db.audit_log.find({"user_id": uid, "action": "auth.login.failure"}))))
print("audit auth.login.failure with no user (locked out before look-up):", db.audit_log.count_documents({"user_id": None, "action": "auth.login.failure"}))

# The update's current password, from another address.
s, b = call("POST", "/auth/register", {"username": "kim_lee", "email": "kim.lee@x.io", "password": pw})
kid = b["data"]["user"]["_id"]
s, b = call("POST", "/auth/login", {"email": "kim.lee@x.io", "password": pw}, source="127.0.0.2")
access, device = b["data"]["access_token"], b["data"]["device_token"]
statuses = [call("PUT", f"/auth/{kid}", {"password": "new-password-1", "current_password": wrong}, token=access, source="127.0.0.2")[0] for _ in range(60)]
print("60 wrong current_password in PUT /auth/{id}:", tally(statuses))
s, b = call("PUT", f"/auth/{kid}", {"password": "new-password-1", "current_password": pw}, token=access, source="127.0.0.2")
print("61st, right:", s, b.get("error") if b else "")

# A crowd of strangers against an owner with a device token.
s, b = call("POST", "/auth/register", {"username": "ana_ruiz", "email": "ana.ruiz@x.io", "password": pw})
s, b = call("POST", "/auth/login", {"email": "ana.ruiz@x.io", "password": pw}, source="127.0.0.3")
device = b["data"]["device_token"]
statuses = []
for n in range(10, 40):
    for _ in range(5):
        statuses.append(call("POST", "/auth/login", {"email": "ana.ruiz@x.io", "password": wrong}, source=f"127.0.0.{n}")[0])
print("150 wrong guesses from 30 addresses:", tally(statuses))
print("owner, unknown client (127.0.0.50), right password:", call("POST", "/auth/login", {"email": "ana.ruiz@x.io", "password": pw}, source="127.0.0.50")[0])
print("owner's device token from 127.0.0.50, right password:", call("POST", "/auth/login", {"email": "ana.ruiz@x.io", "password": pw, "device_token": device}, source="127.0.0.50")[0])
call("POST", "/auth/register", {"username": "bo_li", "email": "bo.li@x.io", "password": pw})
other = call("POST", "/auth/login", {"email": "bo.li@x.io", "password": pw}, source="127.0.0.60")[1]["data"]["device_token"]
for name, token in [("another user's device token", other), ("a 5,000-character token", "x" * 5000), ("a forged token", device[:-12] + "AAAAAAAAAAAA")]:
    print(f"{name}, right password:", call("POST", "/auth/login", {"email": "ana.ruiz@x.io", "password": pw, "device_token": token}, source="127.0.0.50")[0])

# An answer no handler writes: a request head over actix-http's limits (120 headers).
import socket
with socket.create_connection((BASE_HOST, BASE_PORT), timeout=30) as raw:
    headers = "".join(f"x-h{i}: {i}\r\n" for i in range(120))
    raw.sendall(f"GET /health HTTP/1.1\r\nhost: x\r\n{headers}\r\n".encode())
    answer = b""
    while chunk := raw.recv(65536):
        answer += chunk
head, _, body = answer.decode().partition("\r\n\r\n")
print("120 request headers:", head.splitlines()[0], "|", body)
