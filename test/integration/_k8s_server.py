"""_k8s_server.py — a recorded-protocol stand-in for the Kubernetes API server
(no real one is installable here), for datastore_k8s.py. It speaks the parts of
the protocol the kubernetes datastore uses, as the API server does:
  - HTTPS (self-signed cert made by openssl at test time), Bearer token (else 401)
  - GET collection → List JSON (items without apiVersion/kind, metadata.resourceVersion);
    /.../namespaces/NS/PLURAL lists (and watches) namespace NS only,
    paged with ?limit= / ?continue= (410 for a continue token older than a compaction)
  - GET collection?watch=1&resourceVersion=RV&allowWatchBookmarks=true → 200 with a
    chunked stream of {"type": ADDED|MODIFIED|DELETED|BOOKMARK, "object"} lines of the
    events after RV; RV older than the compaction point → an ERROR event with a 410
    Status (or, in mode 'http410', an HTTP 410 reply)
  - GET item (200; 404)
  - POST collection (201; 409 AlreadyExists; 500 when the body carries a
    resourceVersion; 404 for a namespaced object in a namespace that does not
    exist, when /api/v1/namespaces is served), PUT item (200; 404) with the API
    server's optimistic concurrency: a PUT carrying a resourceVersion other than
    the stored one → 409 Conflict; without one → 422 Invalid for a custom
    resource (CRDs allow no unconditional update), accepted for core v1 kinds
    (Node, Pod, Namespace allow it); DELETE item (200; 404; 409 when DeleteOptions'
    preconditions.resourceVersion is not the stored one)
  - objects get metadata.uid and creationTimestamp on create, kept on update
  - unknown collections → 404 (a CRD that is not installed)
  - discovery, as kubectl reads it before `apply`: GET /api (APIVersions), /apis
    (APIGroupList), /api/v1 and /apis/GROUP/VERSION (APIResourceList), all derived
    from the collections served; kubectl then creates each object with a GET (404)
    and a POST to its collection (namespaced: /.../namespaces/NS/PLURAL)
The test drives it: add/modify/delete objects (logged as events), change objects
silently (no event: what a client misses while its watch is gone), compact, send
bookmarks, end watch streams, stop and restart."""
import base64
import json
import os
import socket
import ssl
import subprocess
import threading
import time
import uuid
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAMESPACES = "/api/v1/namespaces"


class State:
    def __init__(self, resources, token):
        # resources: {collection path: (apiVersion, kind, namespaced)}
        self.resources = resources
        self.token = token
        self.rv = 100
        self.objects = {p: {} for p in resources}       # path → {(ns, name): obj}
        self.events = {p: [] for p in resources}        # path → [(rv, type, obj)]
        self.compacted = 0
        self.gone_mode = "event"                        # or "http410"
        self.cond = threading.Condition()
        self.kick = 0                                   # bump to end every watch stream
        self.requests = []                              # (method, path, query dict)
        self.bodies = []                                # (method, path, body json)
        self.pages = 0                                  # list pages answered with a continue token
        self.responses = []                             # (method, path, status) of every plain reply

    def _stamp(self, obj):
        self.rv += 1
        obj = json.loads(json.dumps(obj))
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
        return obj

    def _key(self, obj):
        m = obj["metadata"]
        return (m.get("namespace", ""), m["name"])

    def put(self, path, obj, silent=False):
        with self.cond:
            api, kind, _ = self.resources[path]
            obj = dict(obj, apiVersion=api, kind=kind)
            obj = self._stamp(obj)
            k = self._key(obj)
            old = self.objects[path].get(k)
            m = obj["metadata"]
            m["uid"] = old["metadata"]["uid"] if old else str(uuid.uuid4())
            m["creationTimestamp"] = (old["metadata"]["creationTimestamp"] if old else
                                      time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            typ = "MODIFIED" if k in self.objects[path] else "ADDED"
            self.objects[path][k] = obj
            if not silent:
                self.events[path].append((self.rv, typ, obj))
            self.cond.notify_all()
            return obj

    def delete(self, path, ns, name, silent=False):
        with self.cond:
            obj = self.objects[path].pop((ns, name), None)
            if obj is None:
                return None
            obj = self._stamp(obj)
            if not silent:
                self.events[path].append((self.rv, "DELETED", obj))
            self.cond.notify_all()
            return obj

    def compact(self):
        with self.cond:
            self.compacted = self.rv
            for p in self.events:
                self.events[p] = []

    def bookmark(self, path):
        with self.cond:
            self.rv += 1
            api, kind, _ = self.resources[path]
            self.events[path].append((self.rv, "BOOKMARK", {"apiVersion": api, "kind": kind,
                                                             "metadata": {"resourceVersion": str(self.rv)}}))
            self.cond.notify_all()
            return self.rv

    def end_watches(self):
        with self.cond:
            self.kick += 1
            self.cond.notify_all()

    def get(self, path, ns, name):
        with self.cond:
            return self.objects[path].get((ns, name))

    def writes(self, method, path_prefix):
        """Bodies of the writes (POST/PUT) whose path starts with path_prefix."""
        with self.cond:
            return [b for m, p, b in self.bodies if m == method and p.startswith(path_prefix)]

    def requests_for(self, path, watch):
        return [q for m, p, q in self.requests if p == path and m == "GET" and (("watch" in q) == watch)]


def make_handler(state):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def _send(self, code, obj):
            with state.cond:
                state.responses.append((self.command, urllib.parse.urlsplit(self.path).path, code))
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _status(self, code, reason, msg):
            self._send(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": msg,
                              "reason": reason, "code": code})

        def _route(self):
            u = urllib.parse.urlsplit(self.path)
            q = dict(urllib.parse.parse_qsl(u.query))
            path = u.path
            with state.cond:
                state.requests.append((self.command, path, q))
            if self.headers.get("Authorization") != "Bearer " + state.token:
                self._status(401, "Unauthorized", "Unauthorized")
                return None
            # collection: exact; namespaced item/collection: /.../namespaces/NS/PLURAL[/NAME]
            if path in state.resources:
                return path, None, None, q
            parts = path.split("/")
            for coll in state.resources:
                cparts = coll.split("/")
                base, plural = "/".join(cparts[:-1]), cparts[-1]
                rest = path[len(base):].split("/") if path.startswith(base + "/") else None
                if not rest:
                    continue
                rest = rest[1:]
                if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] == plural:
                    return coll, rest[1], (rest[3] if len(rest) > 3 else None), q
                if len(rest) == 2 and rest[0] == plural:
                    return coll, "", rest[1], q
            self._status(404, "NotFound", f"the server could not find the requested resource ({path})")
            return None

        def _body(self):
            n = int(self.headers.get("Content-Length", "0"))
            obj = json.loads(self.rfile.read(n) or b"{}")
            with state.cond:
                state.bodies.append((self.command, self.path, obj))
            return obj

        def _discovery(self):
            """Answers the discovery paths (True when it did)."""
            path = urllib.parse.urlsplit(self.path).path.rstrip("/")
            groups = {}  # "group/version" or "v1" -> [(plural, kind, namespaced)]
            for coll, (api, kind, namespaced) in state.resources.items():
                groups.setdefault(api, []).append((coll.rsplit("/", 1)[1], kind, namespaced))
            verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]

            def resource_list(gv):
                return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                        "resources": [{"name": p, "singularName": "", "namespaced": ns, "kind": k, "verbs": verbs}
                                      for p, k, ns in sorted(groups.get(gv, []))]}
            if path == "/api":
                body = {"kind": "APIVersions", "versions": ["v1"],
                        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": self.server.server_address[0]}]}
            elif path == "/apis":
                gl = []
                for gv in sorted(g for g in groups if "/" in g):
                    name, version = gv.split("/")
                    v = {"groupVersion": gv, "version": version}
                    gl.append({"name": name, "versions": [v], "preferredVersion": v})
                body = {"kind": "APIGroupList", "apiVersion": "v1", "groups": gl}
            elif path == "/api/v1":
                body = resource_list("v1")
            elif path.startswith("/apis/") and path.count("/") == 3 and path[len("/apis/"):] in groups:
                body = resource_list(path[len("/apis/"):])
            elif path in ("/version",):
                body = {"major": "1", "minor": "28", "gitVersion": "v1.28.0-tabby-stand-in"}
            else:
                return False
            with state.cond:
                state.requests.append((self.command, path, {}))
            if self.headers.get("Authorization") != "Bearer " + state.token:
                self._status(401, "Unauthorized", "Unauthorized")
            else:
                self._send(200, body)
            return True

        def do_GET(self):
            if self._discovery():
                return
            r = self._route()
            if not r:
                return
            coll, ns, name, q = r
            if q.get("watch") in ("1", "true"):
                return self._watch(coll, q, ns)
            if name is not None:
                obj = state.get(coll, ns or "", name)
                if obj is None:
                    self._status(404, "NotFound", f'"{name}" not found')
                else:
                    self._send(200, obj)
                return
            with state.cond:
                # Paging as the API server does it: ?limit=N; metadata.continue is an
                # opaque token (base64 here, so it needs escaping in the query);
                # every page carries the first page's resourceVersion.
                if "continue" in q:
                    tok = json.loads(base64.b64decode(q["continue"]))
                    offset, list_rv = tok["offset"], tok["rv"]
                    if list_rv < state.compacted:
                        self._status(410, "Expired", "continue token expired")
                        return
                else:
                    offset, list_rv = 0, state.rv
                # /.../namespaces/NS/PLURAL lists that namespace only
                keys = sorted(k for k in state.objects[coll] if not ns or k[0] == ns)
                limit = int(q.get("limit") or 0) or len(keys) or 1
                page = keys[offset:offset + limit]
                items = []
                for k in page:
                    o = dict(state.objects[coll][k])
                    o.pop("apiVersion", None)
                    o.pop("kind", None)
                    items.append(o)
                api, kind, _ = state.resources[coll]
                meta = {"resourceVersion": str(list_rv)}
                if offset + limit < len(keys):
                    meta["continue"] = base64.b64encode(
                        json.dumps({"offset": offset + limit, "rv": list_rv, "pad": "?+/"}).encode()).decode()
                    state.pages += 1
                body = {"kind": kind + "List", "apiVersion": api, "metadata": meta, "items": items}
            self._send(200, body)

        def _chunk(self, data):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def _watch(self, coll, q, ns=None):
            rv = int(q.get("resourceVersion") or 0)
            with state.cond:
                too_old = rv < state.compacted
                mode = state.gone_mode
            if too_old and mode == "http410":
                self._status(410, "Expired", f"too old resource version: {rv} ({state.compacted})")
                return
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                if too_old:
                    self._chunk(json.dumps({"type": "ERROR", "object": {
                        "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired", "code": 410,
                        "message": f"too old resource version: {rv} ({state.compacted})"}}).encode() + b"\n")
                    self._chunk(b"")
                    return
                with state.cond:
                    kick = state.kick
                sent = rv
                while True:
                    with state.cond:
                        pending = [e for e in state.events[coll] if e[0] > sent]
                        if not pending and state.kick == kick:
                            state.cond.wait(0.5)
                            pending = [e for e in state.events[coll] if e[0] > sent]
                        ended = state.kick != kick
                    if ns:  # a namespaced watch sees its namespace's events only
                        sent = max([sent] + [e[0] for e in pending])
                        pending = [e for e in pending if e[2].get("metadata", {}).get("namespace", "") == ns]
                    for erv, typ, obj in pending:
                        self._chunk(json.dumps({"type": typ, "object": obj}).encode() + b"\n")
                        sent = max(sent, erv)
                    if ended:
                        self._chunk(b"")
                        return
            except OSError:
                return

        def do_POST(self):
            r = self._route()
            if not r:
                return
            coll, ns, name, q = r
            obj = self._body()
            meta = obj.get("metadata", {})
            if meta.get("resourceVersion"):
                self._status(500, "InternalError", "resourceVersion should not be set on objects to be created")
                return
            k = (meta.get("namespace", ""), meta.get("name"))
            if (k[0] and NAMESPACES in state.objects and state.get(NAMESPACES, "", k[0]) is None):
                self._status(404, "NotFound", f'namespaces "{k[0]}" not found')
                return
            with state.cond:
                exists = k in state.objects[coll]
                if not exists:
                    created = state.put(coll, obj)
            if exists:
                self._status(409, "AlreadyExists", f'"{k[1]}" already exists')
            else:
                self._send(201, created)

        def do_PUT(self):
            r = self._route()
            if not r:
                return
            coll, ns, name, q = r
            obj = self._body()
            api, _, _ = state.resources[coll]
            sent_rv = obj.get("metadata", {}).get("resourceVersion")
            with state.cond:
                cur = state.objects[coll].get((ns or "", name))
                if cur is None:
                    code = 404
                elif not sent_rv and api != "v1":
                    code = 422  # custom resources allow no unconditional update
                elif sent_rv and sent_rv != cur["metadata"]["resourceVersion"]:
                    code = 409
                else:
                    code = 200
                    stored = state.put(coll, obj)
            if code == 200:
                self._send(200, stored)
            elif code == 404:
                self._status(404, "NotFound", f'"{name}" not found')
            elif code == 422:
                self._status(422, "Invalid", f'"{name}" is invalid: metadata.resourceVersion: Invalid value: 0x0: '
                                             "must be specified for an update")
            else:
                self._status(409, "Conflict", f'Operation cannot be fulfilled on "{name}": the object has been '
                                              "modified; please apply your changes to the latest version and try again")

        def do_DELETE(self):
            r = self._route()
            if not r:
                return
            coll, ns, name, q = r
            # DeleteOptions.preconditions.resourceVersion: delete only that version.
            want = None
            if int(self.headers.get("Content-Length", "0")):
                want = ((self._body() or {}).get("preconditions") or {}).get("resourceVersion")
            with state.cond:
                cur = state.objects[coll].get((ns or "", name))
                if cur is not None and want and want != cur["metadata"]["resourceVersion"]:
                    self._status(409, "Conflict", f'Operation cannot be fulfilled on "{name}": Precondition failed: '
                                 f'ResourceVersion in precondition: {want}, ResourceVersion in object meta: '
                                 f'{cur["metadata"]["resourceVersion"]}')
                    return
                gone = state.delete(coll, ns or "", name)
            if gone is None:
                self._status(404, "NotFound", f'"{name}" not found')
            else:
                self._send(200, gone)

    return Handler


def make_cert(d, name, ip="127.0.0.1"):
    """A self-signed server certificate for `ip` (its own CA), made by openssl now."""
    cert, key = os.path.join(d, name + ".crt"), os.path.join(d, name + ".key")
    p = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "1", "-subj", "/CN=tabby-test-apiserver", "-addext", f"subjectAltName=IP:{ip}"],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"openssl could not make a test certificate: {p.stderr}")
    return cert, key


class Server:
    """Serves `state` over HTTPS on host:port; with `netns`, the listening socket
    is made inside that network namespace (the server thread runs here)."""

    def __init__(self, state, cert, key, port=0, host="127.0.0.1", netns=None):
        self.state, self.cert, self.key = state, cert, key
        self.port, self.host, self.netns = port, host, netns
        self.httpd = None

    def start(self):
        ThreadingHTTPServer.allow_reuse_address = True
        ThreadingHTTPServer.request_queue_size = 128

        def bind():
            return ThreadingHTTPServer((self.host, self.port), make_handler(self.state))
        if self.netns:
            from tabbytest.core import in_netns  # noqa: PLC0415 (only tests with namespaces need it)
            self.httpd = in_netns(self.netns, bind)
        else:
            self.httpd = bind()
        self.httpd.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        """Closes the listener and ends every watch stream (an outage)."""
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None
        self.state.end_watches()
