"""The bootstrap that runs inside the sandbox, and the parent's reading of its report.

The harness is standalone source (it imports nothing from tcc_plugin). It receives its
job (``marshal``-encoded plain data) on a memfd opened by the parent (never a path the
candidate could replace) and reports over a pipe the parent opened before the candidate
ran:

    ready                         limits applied; waiting for the parent's "go" on stdin
    <nonce> start                 the candidate's code is about to run
    <nonce> error <m> <hex>       the candidate's code raised (tests are not run)
    <nonce> pass <i>              test i passed
    <nonce> fail <i> <m> <hex>    test i failed (m: 1 for a MemoryError; hex: UTF-8)
    <nonce> end                   all tests ran

The parent counts the results itself: each test index once, in order, only between
``start`` and ``end``, with the nonce; any other line makes the verdict ``forged``
(score 0). Nothing after ``end`` is read (an ``atexit`` hook comes too late), and a run
that never says ``end`` (``os._exit``, a crash) scores 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["HARNESS", "Report"]

# Runs as `python -I -S -B -c HARNESS <job fd> <report fd>`. Everything the harness
# needs later is bound before the candidate's code runs, in locals of one function (no
# module global the candidate can rewrite through __main__).
HARNESS = r"""
import os, sys

def _main():
    # Only cheap built-in modules before the candidate runs (json and signal import
    # re and enum: tens of milliseconds on every verification).
    import _signal, marshal, resource
    job_fd, report_fd = int(sys.argv[1]), int(sys.argv[2])
    chunks = []
    while True:
        chunk = os.read(job_fd, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(job_fd)
    job = marshal.loads(b"".join(chunks))
    del chunks

    for kind, value in (
        (resource.RLIMIT_AS, job["memory"]), (resource.RLIMIT_CPU, job["cpu"]),
        (resource.RLIMIT_FSIZE, job["fsize"]), (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NPROC, job["nproc"]), (resource.RLIMIT_NOFILE, 256),
    ):
        try:
            resource.setrlimit(kind, (value, value))  # hard = soft: cannot be raised back
        except (ValueError, OSError):
            pass
    _signal.signal(_signal.SIGXFSZ, _signal.SIG_IGN)  # a too-large write raises OSError

    sys.path.extend(job.get("path", ()))  # directories the user exposed, e.g. site-packages
    write = os.write
    strict_equal = _make_strict_equal()
    nonce, tests, code = job["nonce"], tuple(job["tests"]), job["code"]

    def say(line):
        write(report_fd, (line + "\n").encode("utf-8", "replace"))

    def why(exc, full):
        # "<memory 0|1> <UTF-8 hex>": one line whatever the message holds
        if full:
            import traceback
            text = traceback.format_exc()
        else:
            text = type(exc).__name__ + ": " + str(exc)
        text = text if len(text) <= 500 else "..." + text[-500:]
        oom = "1" if isinstance(exc, MemoryError) else "0"
        return oom + " " + text.encode("utf-8", "replace").hex()

    say("ready")
    sys.stdin.buffer.read(1)  # the parent's "go": it has moved us into our cgroup
    sys.stdin.close()

    if job["audit"] != "off":
        # "processes": no new process nor native code (where nothing else caps their
        # number); "full" also: no network, no signals, no file outside its roots.
        full = job["audit"] == "full"
        allowed_read = tuple(job["read_roots"]) if full else ("/",)
        allowed_write = tuple(job["write_roots"]) if full else ("/",)
        blocked = frozenset((
            "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
            "os.fork", "os.forkpty", "pty.spawn", "ctypes.dlopen", "ctypes.dlsym",
            "ctypes.cdata", "sys.addaudithook",
        ) + ((
            "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
            "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
            "os.kill", "os.killpg",
        ) if full else ()))
        banned_modules = frozenset(("_posixsubprocess", "_ctypes", "_xxsubinterpreters"))
        fspath, isinstance_, str_, bytes_ = os.fspath, isinstance, str, bytes
        realpath = os.path.realpath

        def guard(event, args):
            if event in blocked:
                raise PermissionError("sandbox: " + event + " is not allowed")
            if event == "import" and args[0] in banned_modules:
                raise PermissionError("sandbox: importing " + args[0] + " is not allowed")
            if full and event == "open" and args[0] is not None and not isinstance_(args[0], int):
                path = fspath(args[0])
                if isinstance_(path, bytes_):
                    path = path.decode("utf-8", "replace")
                path = realpath(path)
                flags = args[2] if len(args) > 2 and isinstance_(args[2], int) else 0
                mode = args[1] if isinstance_(args[1], str_) else ""
                writing = (flags & 3) != 0 or any(c in mode for c in "wax+")
                roots = allowed_write if writing else allowed_read + allowed_write
                if not any(path == r or path.startswith(r + "/") for r in roots):
                    raise PermissionError("sandbox: opening " + path + " is not allowed")

        sys.addaudithook(guard)

    role = job["role"]
    if role == "candidate":  # isolated tests: serve calls, never report
        os.close(report_fd)
        _serve(code, job["rpc_in"], job["rpc_out"])
        return
    if role == "tests":  # isolated tests: the candidate's names are remote stubs
        namespace = _remote(job["rpc_in"], job["rpc_out"])
    else:
        namespace = {"__name__": "__candidate__"}
    say(nonce + " start")
    if role == "tests":
        if type(namespace) is str:
            say(nonce + " error 0 " + namespace.encode("utf-8", "replace").hex())
            return
    else:
        try:
            exec(compile(code, "<candidate>", "exec"), namespace)
        except BaseException as exc:
            say(nonce + " error " + why(exc, True))
            return
    for i, test in enumerate(tests):
        namespace["strict_equal"] = strict_equal
        try:
            exec(compile(test, "<test %d>" % i, "exec"), namespace)
        except BaseException as exc:
            say(nonce + " fail %d " % i + why(exc, False))
        else:
            say(nonce + " pass %d" % i)
    say(nonce + " end")

_LIMIT = 16 << 20

def _send(fd, value):
    import marshal
    data = marshal.dumps(value)
    data = len(data).to_bytes(4, "big") + data
    while data:
        data = data[os.write(fd, data):]

def _recv(fd):
    import marshal
    def exactly(n):
        parts = []
        while n:
            chunk = os.read(fd, min(n, 1 << 20))
            if not chunk:
                raise EOFError("the other side closed the channel")
            parts.append(chunk)
            n -= len(chunk)
        return b"".join(parts)
    size = int.from_bytes(exactly(4), "big")
    if size > _LIMIT:
        raise ValueError("message too large")
    return marshal.loads(exactly(size))

def _serve(code, rpc_in, rpc_out):
    # The candidate's process: run its code, then answer calls with plain data.
    import traceback
    from marshal import dumps
    namespace = {"__name__": "__candidate__"}
    try:
        exec(compile(code, "<candidate>", "exec"), namespace)
    except BaseException:
        text = traceback.format_exc()
        _send(rpc_out, ("error", text[-500:]))
        return
    names = []
    for name, value in list(namespace.items()):
        if name.startswith("__"):
            continue
        if callable(value):
            names.append((name, 0, None))
        else:
            try:
                dumps(value)
            except Exception:
                continue
            names.append((name, 1, value))
    _send(rpc_out, ("names", names))
    while True:
        try:
            message = _recv(rpc_in)
        except EOFError:
            return
        _, name, args, kwargs = message
        try:
            result = namespace[name](*args, **kwargs)
        except BaseException as exc:
            reply = ("raise", type(exc).__name__, str(exc)[:500])
        else:
            reply = ("ok", result)
        try:
            _send(rpc_out, reply)
        except (ValueError, TypeError):
            _send(rpc_out, ("bad", type(result).__name__))

def _remote(rpc_in, rpc_out):
    # The tests' process: stubs that call into the candidate's process; only values of
    # built-in types come back (checked here), so `==` never runs the candidate's code.
    import builtins
    plain_types = (bool, int, float, complex, str, bytes, type(None))

    def plain(value, depth=0):
        kind = type(value)
        if kind in plain_types:
            return True
        if depth > 100:
            return False
        if kind in (list, tuple, set, frozenset):
            return all(plain(x, depth + 1) for x in value)
        if kind is dict:
            return all(plain(k, depth + 1) and plain(x, depth + 1) for k, x in value.items())
        return False

    class CandidateError(Exception):
        "An exception the candidate raised, of a type that exists only in its process."

    def stub(name):
        def call(*args, **kwargs):
            if not plain((args, kwargs)):
                raise TypeError("isolated tests pass only built-in values to the candidate")
            _send(rpc_out, ("call", name, args, kwargs))
            reply = _recv(rpc_in)
            if type(reply) is tuple and len(reply) == 2 and reply[0] == "ok" and plain(reply[1]):
                return reply[1]
            if type(reply) is tuple and len(reply) == 3 and reply[0] == "raise":
                kind = getattr(builtins, str(reply[1]), None)
                if not (isinstance(kind, type) and issubclass(kind, Exception)):
                    kind = CandidateError
                raise kind(str(reply[2]))
            if type(reply) is tuple and len(reply) == 2 and reply[0] == "bad":
                raise TypeError("%s() returned a %s, which cannot leave the candidate's "
                                "process (isolated tests compare built-in values)"
                                % (name, str(reply[1])[:80]))
            raise CandidateError("a malformed reply from the candidate's process")
        call.__name__ = name
        return call

    try:
        reply = _recv(rpc_in)
    except Exception as exc:
        return "the candidate's process did not answer: " + type(exc).__name__
    if type(reply) is tuple and len(reply) == 2 and reply[0] == "error":
        return str(reply[1])
    if not (type(reply) is tuple and len(reply) == 2 and reply[0] == "names"):
        return "a malformed reply from the candidate's process"
    namespace = {"__name__": "__tests__", "CandidateError": CandidateError}
    for entry in reply[1] if type(reply[1]) is list else ():
        if type(entry) is not tuple or len(entry) != 3 or type(entry[0]) is not str:
            continue
        name, is_value, value = entry
        if not name.isidentifier():
            continue
        if is_value == 0:
            namespace[name] = stub(name)
        elif plain(value):
            namespace[name] = value
    return namespace

def _make_strict_equal(
    _type=type, _len=len, _zip=zip, _all=all, _sorted=sorted, _repr=repr,
    _plain=(bool, int, float, complex, str, bytes, type(None)),
):
    # Equality that never calls a method the candidate defined: types must be exactly
    # the built-in ones, and containers are compared element by element. Builtins are
    # bound now, before the candidate's code can patch them.
    def strict_equal(a, b):
        ta, tb = _type(a), _type(b)
        if ta is not tb:
            return False
        if ta in _plain:
            return ta.__eq__(a, b) is True
        if ta is list or ta is tuple:
            return _len(a) == _len(b) and _all(strict_equal(x, y) for x, y in _zip(a, b))
        if ta is dict:
            if _len(a) != _len(b) or not _all(_type(k) in _plain for k in a):
                return False
            return _all(k in b and strict_equal(a[k], b[k]) for k in _sorted(a, key=_repr))
        if ta is set or ta is frozenset:
            plain = _all(_type(x) in _plain for x in a) and _all(_type(x) in _plain for x in b)
            return plain and a == b
        return False
    return strict_equal

_main()
try:
    sys.stdout.flush()
finally:
    os._exit(0)
"""


@dataclass
class Report:
    """The parent's count of the harness's report lines (see the module docs)."""

    nonce: str
    total: int
    ready: bool = False
    started: bool = False
    ended: bool = False
    forged: str | None = None
    error: str | None = None
    memory_error: bool = False
    results: list[str | None] = field(default_factory=list)

    @property
    def passed(self) -> int:
        """Tests passed, counted by the parent; 0 unless the run ended cleanly."""
        if not self.ended or self.forged is not None:
            return 0
        return min(self.total, sum(1 for r in self.results if r is None))

    def feed(self, line: bytes) -> bool:
        """Take one line; returns False once nothing more is to be read."""
        if self.forged is not None or self.ended:
            return False
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            return self._forge("a report line that is not UTF-8")
        if not self.ready:
            if text == "ready":
                self.ready = True
                return True
            return self._forge("a report line before the harness was ready")
        nonce, _, rest = text.partition(" ")
        if nonce != self.nonce:
            return self._forge("a report line without the run's nonce")
        verb, _, arg = rest.partition(" ")
        if verb == "start" and not self.started:
            self.started = True
            return True
        if not self.started:
            return self._forge(f"{verb!r} before start")
        if verb == "error" and not self.results:
            self.memory_error, self.error = self._why(arg)
            self.ended = True
            return False
        if verb in ("pass", "fail"):
            index, _, payload = arg.partition(" ")
            if index != str(len(self.results)) or len(self.results) >= self.total:
                return self._forge(f"a result for test {index!r} out of order")
            if verb == "pass":
                self.results.append(None)
            else:
                memory, why = self._why(payload)
                self.results.append(why)
                self.memory_error = self.memory_error or memory
            return True
        if verb == "end" and len(self.results) == self.total:
            self.ended = True
            return False
        return self._forge(f"an unexpected report line {text[:80]!r}")

    @staticmethod
    def _why(text: str) -> tuple[bool, str]:
        """(a MemoryError?, the message) from ``<0|1> <UTF-8 hex>``."""
        memory, _, encoded = text.partition(" ")
        try:
            message = bytes.fromhex(encoded).decode("utf-8", "replace")
        except ValueError:
            message = "(unreadable)"
        return memory == "1", message

    def _forge(self, why: str) -> bool:
        self.forged = why
        return False
