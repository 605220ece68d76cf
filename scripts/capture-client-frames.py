#!/usr/bin/env python3
"""Capture the exact request frames the real Arkouda Python client sends.

This script documents (and can reproduce) how the fixtures in
tests/fixtures/arkouda-frames/ were made. It is a one-off generator and is NOT
run by CI or by scripts/test.sh; the Rust tests only read the JSON files it
wrote. No Arkouda code is committed to this repository: the script reads it
from a git directory of https://github.com/Bears-R-Us/arkouda that you pass on
the command line, and extracts it into a temporary directory.

What it does, for every release tag:

1. Extracts the client's messaging modules exactly as they are at that tag
   (client.py, message.py, security.py, logger.py, io_util.py -- under
   arkouda/ or, from v2026.02.27 on, arkouda/core/ and arkouda/pandas/) into a
   temporary package directory.
2. Stubs only the modules that are irrelevant to building a request message
   and would otherwise pull in numpy/pandas/h5py: the package __init__ (which
   only needs __version__), the dtypes module (resolve_scalar_dtype, which for
   a str value returns "str" at every tag, and isSupportedNumber) and the
   pdarray/Strings/SegArray/sparray classes (only used in isinstance checks
   and dispatch tables). typeguard (pinned 2.10.0 by every tag), pyfiglet and
   pyzmq are the real packages.
3. In a fresh Python process (so every tag gets a clean import), starts a
   ZeroMQ REP socket on 127.0.0.1 (random port) that records every request
   frame byte for byte and answers like an arkouda_server would, then drives
   the real client:
       client.connect(server="127.0.0.1", port=<port>)   # what ak.connect is
       client.generic_msg(cmd="getconfig")
       client.generic_msg(cmd="metrics", args=<ALL>)
       client.generic_msg(cmd="metrics", args=<SERVER_INFO>)
       client.disconnect()
   where the metrics args are written the way that era's code did it:
   args=str(MetricCategory.ALL), i.e. the bare string "ALL", up to v2022.08.30
   (arkouda METRICS.md and arkouda-contrib's arkouda_metrics_exporter as of
   Aug 2022; that server split the args string), and
   args={"category": str(MetricCategory.ALL)} from v2022.09.30 on (the server
   parses JSON args with getValueOf("category"); arkouda-contrib commit
   dba3b6c "updated arkouda client code per msg format changes").
   The user name comes from the last component of $HOME (security.get_username)
   so HOME is set to <tmp>/home/alice; there is no ~/.arkouda/tokens.txt, so
   the token is None and is sent as "".
4. Writes tests/fixtures/arkouda-frames/<tag>.json.

Requirements for the Python that runs the client (--python, default: this
interpreter): pyzmq, typeguard==2.10.0, pyfiglet. For example:
    python3.11 -m venv /tmp/akcap && /tmp/akcap/bin/pip install pyzmq typeguard==2.10.0 pyfiglet

Usage:
    scripts/capture-client-frames.py /path/to/arkouda.git [--python PY] [--out DIR] [TAG ...]
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile

DEFAULT_TAGS = [
    "v2022.08.30",  # last tag whose server takes metrics args as a bare string
    "v2022.09.30",  # first tag whose server parses metrics args as JSON
    "v2022.11.10",  # first tag whose generic_msg always sends JSON args ("[]", size 0)
    "v2023.11.15",
    "v2024.06.21",  # last tag with "objType" in the JSON parameter objects
    "v2024.10.02",  # "objType" dropped from the parameter objects
    "v2024.12.06",  # connect also sends getRegistrationConfig
    "v2026.02.02.1",  # last tag with the flat arkouda/client.py layout
    "v2026.07.15",  # newest tag; arkouda/core/client.py layout
]

FIXED_USER = "alice"

# Last tag at which the metrics category was sent as a bare string.
BARE_METRICS_ARGS_TAGS = {"v2022.08.15", "v2022.08.30"}

STUB_VERSION = "capture-stub"

# Stub modules: only what message building never depends on. Real files at the
# tag are extracted on top of these, so a stub never shadows real code.
DTYPES_STUB = '''\
"""Stub of arkouda's dtypes module for frame capture (numpy-free).

resolve_scalar_dtype mirrors the real function for Python scalars; for the
only value type the captured requests carry (str) every tag returns "str".
"""
import builtins


def resolve_scalar_dtype(val):
    if isinstance(val, builtins.bool):
        return "bool"
    if isinstance(val, int):
        if val >= 2**64:
            return "bigint"
        if val >= 2**63:
            return "uint64"
        return "int64"
    if isinstance(val, float):
        return "float64"
    if isinstance(val, builtins.str):
        return "str"
    return builtins.str(type(val))


def isSupportedNumber(val):
    return isinstance(val, (int, float)) and not isinstance(val, builtins.bool)


is_supported_number = isSupportedNumber
'''

STUBS = {
    "arkouda/__init__.py": f'"""Stub package for frame capture."""\n__version__ = "{STUB_VERSION}"\n',
    "arkouda/core/__init__.py": "",
    "arkouda/pandas/__init__.py": "",
    "arkouda/numpy/__init__.py": "",
    "arkouda/scipy/__init__.py": "",
    "arkouda/dtypes.py": DTYPES_STUB,
    "arkouda/numpy/dtypes.py": DTYPES_STUB,
}
for _mod, _cls in [
    ("pdarrayclass", "pdarray"),
    ("strings", "Strings"),
    ("segarray", "SegArray"),
    ("sparrayclass", "sparray"),
]:
    _body = f'"""Stub for frame capture."""\n\n\nclass {_cls}:\n    pass\n'
    STUBS[f"arkouda/{_mod}.py"] = _body
    STUBS[f"arkouda/numpy/{_mod}.py"] = _body
STUBS["arkouda/scipy/sparrayclass.py"] = STUBS["arkouda/sparrayclass.py"]

# Real modules to extract, in order of preference per module.
REAL_FILES = [
    ["arkouda/core/__init__.py"],
    ["arkouda/core/client.py", "arkouda/client.py"],
    ["arkouda/core/message.py", "arkouda/message.py"],
    ["arkouda/core/security.py", "arkouda/security.py"],
    ["arkouda/core/logger.py", "arkouda/logger.py"],
    ["arkouda/pandas/io_util.py", "arkouda/io_util.py"],
]

# What the fake server reports. Keys cover everything any tag's client reads
# (connect reads arkoudaVersion and regexMaxCaptures; later helpers read
# maxArrayDims, numLocales, ...), modelled on the server's getconfig record.
SERVER_CONFIG = {
    "arkoudaVersion": STUB_VERSION,
    "chplVersion": "2.1.0",
    "pythonVersion": "3.11",
    "ZMQVersion": "4.3.5",
    "HDF5Version": "1.14.4",
    "serverHostname": "ak-node-0",
    "ServerPort": 5555,
    "numLocales": 2,
    "numNodes": 2,
    "numPUs": 8,
    "maxTaskPar": 8,
    "physicalMemory": 68719476736,
    "distributionType": "BlockDom(1,int(64),one,unmanaged DefaultDist)",
    "LocaleConfigs": [
        {"id": 0, "name": "ak-node-0", "numPUs": 8, "maxTaskPar": 8, "physicalMemory": 34359738368},
        {"id": 1, "name": "ak-node-1", "numPUs": 8, "maxTaskPar": 8, "physicalMemory": 34359738368},
    ],
    "authenticate": False,
    "logLevel": "INFO",
    "logChannel": "CONSOLE",
    "regexMaxCaptures": 20,
    "byteorder": "little",
    "autoShutdown": False,
    "serverInfoNoSplash": False,
    "maxArrayDims": 1,
}
REGISTRATION_CONFIG = {"parameter_classes": {"array": {"nd": [1], "dtype": ["int64", "uint64", "float64", "bool"]}}}

# Runs in a child process with PYTHONPATH pointing at the extracted package.
DRIVER = r'''
import importlib, json, sys, threading
import zmq

spec = json.loads(sys.argv[1])
recorded = []            # list of lists of frame parts (bytes)
replies = []             # reply string per request
ctx = zmq.Context()
rep = ctx.socket(zmq.REP)
rep.setsockopt(zmq.LINGER, 0)
rep.bind("tcp://127.0.0.1:*")
port = int(rep.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])
stop = threading.Event()


def answer(parts):
    try:
        req = json.loads(parts[0].decode("utf-8"))
    except Exception:
        req = {}
    cmd, user = req.get("cmd", ""), req.get("user", "")
    if cmd == "connect":
        msg = "connected to arkouda server tcp://*:5555"
    elif cmd == "getconfig":
        msg = json.dumps(spec["server_config"])
    elif cmd == "getRegistrationConfig":
        msg = json.dumps(spec["registration_config"])
    elif cmd == "metrics":
        msg = "[]"
    elif cmd == "disconnect":
        msg = "disconnected from arkouda server tcp://*:5555"
    else:
        msg = ""
    return json.dumps({"msg": msg, "msgType": "NORMAL", "msgFormat": "STRING", "user": user})


def serve():
    poller = zmq.Poller()
    poller.register(rep, zmq.POLLIN)
    while not stop.is_set():
        if not poller.poll(50):
            continue
        parts = rep.recv_multipart(copy=True)
        recorded.append(parts)     # recorded before replying: the client's call
        reply = answer(parts)      # returns only after this frame is in `recorded`
        replies.append(reply)
        rep.send_string(reply)


t = threading.Thread(target=serve, daemon=True)
t.start()

client = importlib.import_module(spec["client_module"])
marks = {}
client.connect(server="127.0.0.1", port=port)
marks["connect_end"] = len(recorded)
client.generic_msg(cmd="getconfig")
marks["getconfig"] = len(recorded) - 1
for cat in ("ALL", "SERVER_INFO"):
    args = cat if spec["bare_metrics_args"] else {"category": cat}
    client.generic_msg(cmd="metrics", args=args)
    marks["metrics_" + cat] = len(recorded) - 1
client.disconnect()
marks["disconnect"] = len(recorded) - 1
stop.set()
t.join()

out = {
    "frames": [[p.hex() for p in parts] for parts in recorded],
    "replies": replies,
    "marks": marks,
    "username": client.username,
    "zmq_version": zmq.zmq_version(),
    "pyzmq_version": zmq.__version__,
    "python_version": sys.version.split()[0],
}
with open(spec["out"], "w") as f:
    json.dump(out, f)
'''


def git(gitdir, *args):
    return subprocess.run(["git", "--git-dir", gitdir, *args], check=True, capture_output=True).stdout


def exists_at(gitdir, tag, path):
    r = subprocess.run(["git", "--git-dir", gitdir, "cat-file", "-e", f"{tag}:{path}"], capture_output=True)
    return r.returncode == 0


def capture(gitdir, tag, python):
    commit = git(gitdir, "rev-list", "-n1", tag).decode().strip()
    with tempfile.TemporaryDirectory(prefix="akframes-") as tmp:
        pkg = os.path.join(tmp, "pkg")
        for rel, body in STUBS.items():
            os.makedirs(os.path.dirname(os.path.join(pkg, rel)), exist_ok=True)
            with open(os.path.join(pkg, rel), "w") as f:
                f.write(body)
        real = []
        for candidates in REAL_FILES:
            for rel in candidates:
                if exists_at(gitdir, tag, rel):
                    with open(os.path.join(pkg, rel), "wb") as f:
                        f.write(git(gitdir, "show", f"{tag}:{rel}"))
                    real.append(rel)
                    break
        client_path = next(p for p in real if p.endswith("/client.py"))
        client_module = client_path[:-3].replace("/", ".")

        home = os.path.join(tmp, "home", FIXED_USER)
        os.makedirs(home)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARKOUDA_")}
        env.update(
            HOME=home,
            PYTHONPATH=pkg,
            PYTHONDONTWRITEBYTECODE="1",
            ARKOUDA_CLIENT_MODE="API",  # no splash banner; does not affect messages
        )
        result_path = os.path.join(tmp, "result.json")
        spec = {
            "client_module": client_module,
            "bare_metrics_args": tag in BARE_METRICS_ARGS_TAGS,
            "server_config": SERVER_CONFIG,
            "registration_config": REGISTRATION_CONFIG,
            "out": result_path,
        }
        proc = subprocess.run(
            [python, "-c", DRIVER, json.dumps(spec)],
            env=env,
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{tag}: client driver failed:\n{proc.stdout}\n{proc.stderr}")
        with open(result_path) as f:
            res = json.load(f)
    return commit, client_path, real, spec, res


def frame_text(parts_hex):
    parts = [bytes.fromhex(h) for h in parts_hex]
    if len(parts) != 1:
        raise RuntimeError(f"expected a single-part request, got {len(parts)} parts")
    raw = parts[0]
    text = raw.decode("utf-8")
    if text.encode("utf-8") != raw:
        raise RuntimeError("frame does not round-trip through UTF-8")
    return text, raw


def build_fixture(tag, commit, client_path, real, spec, res):
    frames_hex = res["frames"]
    marks = res["marks"]
    texts = []
    raws = []
    for parts in frames_hex:
        t, r = frame_text(parts)
        texts.append(t)
        raws.append(r)
    connect_seq = texts[: marks["connect_end"]]
    cmds = [json.loads(t)["cmd"] for t in connect_seq]
    if cmds[0] != "connect":
        raise RuntimeError(f"{tag}: first frame is {cmds[0]!r}, not connect")
    getconfig_in_connect = connect_seq[cmds.index("getconfig")]
    if getconfig_in_connect != texts[marks["getconfig"]]:
        raise RuntimeError(f"{tag}: getconfig during connect differs from generic_msg(cmd='getconfig')")

    labels = {
        "connect": 0,
        "getconfig": marks["getconfig"],
        "metrics_ALL": marks["metrics_ALL"],
        "metrics_SERVER_INFO": marks["metrics_SERVER_INFO"],
    }
    frames = {k: texts[i] for k, i in labels.items()}
    metrics_args = "ALL" if spec["bare_metrics_args"] else {"category": "ALL"}

    gc = json.loads(frames["getconfig"])
    ma = json.loads(frames["metrics_ALL"])
    notes = [
        f"Captured by scripts/capture-client-frames.py from the real {client_path} and "
        f"{next(p for p in real if p.endswith('/message.py'))} at {tag} "
        "(package __init__, dtypes and pdarray/Strings/SegArray/sparray classes stubbed; "
        "typeguard 2.10.0, pyfiglet and pyzmq real).",
        "Every request is a single ZeroMQ frame: json.dumps(RequestMessage.asdict()) with Python's default "
        "separators (', ' and ': '), key order user, token, cmd, format, args, size; size is a JSON number.",
        f"connect sends {len(connect_seq)} frame(s): " + ", ".join(cmds) + ".",
        f"getconfig is sent with args {gc['args']!r} and size {gc['size']}.",
        (
            'metrics called as generic_msg(cmd="metrics", args="ALL") (str(MetricCategory.ALL)): '
            f"args is the bare string {ma['args']!r}, size {ma['size']}."
            if isinstance(metrics_args, str)
            else 'metrics called as generic_msg(cmd="metrics", args={"category": "ALL"}): args is a '
            "JSON array of JSON-encoded strings (double-encoded), one per parameter; here one string "
            + json.loads(ma["args"])[0]
            + f", size {ma['size']} (the parameter count)."
        ),
        "user comes from the last component of $HOME (set to .../home/alice); token is \"\" because "
        "no ~/.arkouda/tokens.txt entry exists and no access_token was given.",
    ]
    if len(connect_seq) > 2:
        notes.append(
            "connect also sends getRegistrationConfig. Per src/ServerDaemon.chpl at this tag the "
            "MetricsServerDaemon (metrics port) selects only metrics/connect/getconfig and answers any "
            "other cmd with an empty NORMAL msg, which this client's connect cannot parse as JSON "
            "(ValueError), so ak.connect to the metrics port fails from this era on (read from source, "
            "not run against a real server)."
        )

    return {
        "tag": tag,
        "commit": commit,
        "source": f"{client_path}@{tag}",
        "source_files": [f"{p}@{tag}" for p in real],
        "user": FIXED_USER,
        "token": "",
        "metrics_args": metrics_args,
        "frames": frames,
        "frame_bytes": {k: len(raws[i]) for k, i in labels.items()},
        "frame_sha256": {k: hashlib.sha256(raws[i]).hexdigest() for k, i in labels.items()},
        "connect_sequence": connect_seq,
        "extra_frames": {"disconnect": texts[marks["disconnect"]]},
        "replies": {
            "connect": res["replies"][0],
            "getconfig": res["replies"][marks["getconfig"]],
            "metrics_ALL": res["replies"][marks["metrics_ALL"]],
        },
        "capture_env": {
            "python": res["python_version"],
            "pyzmq": res["pyzmq_version"],
            "libzmq": res["zmq_version"],
        },
        "notes": " ".join(notes),
    }


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gitdir", help="git directory of Bears-R-Us/arkouda (bare clone or .git)")
    ap.add_argument("tags", nargs="*", default=DEFAULT_TAGS)
    ap.add_argument("--python", default=sys.executable, help="Python with pyzmq, typeguard==2.10.0, pyfiglet")
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures", "arkouda-frames"))
    args = ap.parse_args()

    os.makedirs(args.out, exist_ok=True)
    for tag in args.tags:
        commit, client_path, real, spec, res = capture(args.gitdir, tag, args.python)
        if res["username"] != FIXED_USER:
            raise RuntimeError(f"{tag}: client user is {res['username']!r}, expected {FIXED_USER!r}")
        fixture = build_fixture(tag, commit, client_path, real, spec, res)
        path = os.path.join(args.out, f"{tag}.json")
        with open(path, "w") as f:
            json.dump(fixture, f, indent=2)
            f.write("\n")
        print(f"{path}: {len(fixture['connect_sequence'])} connect frame(s)")
        for k, v in fixture["frames"].items():
            print(f"  {k}: {v}")


if __name__ == "__main__":
    main()
