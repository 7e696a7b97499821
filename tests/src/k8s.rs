//! A real HTTP server speaking the part of the Kubernetes API that the k8s
//! recovery steps use, with the API server's optimistic concurrency:
//!
//! - `GET /apis/apps/v1/namespaces/{ns}/deployments/{name}`;
//! - `GET /api/v1/namespaces/{ns}/pods?labelSelector=...` (equality terms:
//!   `k=v`, `k==v`, `k!=v`, `k`, `!k`, comma-separated);
//! - `PATCH` of a deployment or a pod with `application/merge-patch+json`
//!   (RFC 7386): a `metadata.resourceVersion` in the patch that is not the
//!   object's current one is answered 409 Conflict, as the API server does;
//! - `DELETE /api/v1/namespaces/{ns}/pods/{name}` with `DeleteOptions`
//!   whose `preconditions.resourceVersion` / `uid` must match, else 409.
//!
//! Every write bumps the object's `resourceVersion` (one counter for the
//! server, as etcd's revision). Errors are `Status` objects. Requests are
//! recorded (method, path, headers, body) for the test to read; a test can
//! also change an object behind the client's back (another writer).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

pub use crate::http::Recorded;

#[derive(Debug, Default)]
struct Store {
    /// `(kind, namespace, name)` → object; kind is `deployments` or `pods`.
    objects: BTreeMap<(String, String, String), Value>,
    revision: u64,
    requests: Vec<Recorded>,
    /// An object that another writer changes right after it is next read.
    touch_after_read: Option<(String, String, String)>,
}

impl Store {
    fn bump(&mut self, obj: &mut Value) {
        self.revision += 1;
        obj["metadata"]["resourceVersion"] = Value::String(self.revision.to_string());
    }

    fn touch(&mut self, key: &(String, String, String)) {
        if let Some(mut obj) = self.objects.remove(key) {
            obj["metadata"]["annotations"]["touched-by"] = Value::String("another writer".into());
            self.bump(&mut obj);
            self.objects.insert(key.clone(), obj);
        }
    }

    /// After a read of `key`: the writer the test set up changes it.
    fn after_read(&mut self, key: &(String, String, String)) {
        if self.touch_after_read.as_ref() == Some(key) {
            self.touch_after_read = None;
            self.touch(key);
        }
    }
}

/// A running Kubernetes API stub; stopped on drop.
#[derive(Debug)]
pub struct KubeStub {
    /// Where it listens.
    pub addr: SocketAddr,
    store: Arc<Mutex<Store>>,
    task: tokio::task::JoinHandle<()>,
}

impl KubeStub {
    /// Starts on a free port with no objects.
    pub async fn start() -> KubeStub {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let store = Arc::new(Mutex::new(Store {
            revision: 100,
            ..Store::default()
        }));
        let s = store.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let s = s.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let s = s.clone();
                        async move { Ok::<_, Infallible>(handle(&s, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        KubeStub { addr, store, task }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig for this server: context `stub`, namespace `namespace`,
    /// bearer `token`.
    pub fn kubeconfig(&self, namespace: &str, token: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: stub\n\
             clusters:\n- name: stub\n  cluster:\n    server: {}\n\
             users:\n- name: stub\n  user:\n    token: {token}\n\
             contexts:\n- name: stub\n  context:\n    cluster: stub\n    user: stub\n    namespace: {namespace}\n",
            self.url()
        )
    }

    /// Adds a deployment with `replicas`; returns its resourceVersion.
    pub fn add_deployment(&self, namespace: &str, name: &str, replicas: i64) -> String {
        let obj = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": { "name": name, "namespace": namespace, "uid": format!("uid-{name}"),
                          "creationTimestamp": "2024-01-01T00:00:00Z", "annotations": {} },
            "spec": {
                "replicas": replicas,
                "selector": { "matchLabels": { "app": name } },
                "template": { "metadata": { "labels": { "app": name } },
                              "spec": { "containers": [ { "name": "app", "image": "faxi:1" } ] } }
            }
        });
        self.put("deployments", namespace, name, obj)
    }

    /// Adds a pod with `labels`, created at `created` (RFC 3339); returns
    /// its resourceVersion.
    pub fn add_pod(
        &self,
        namespace: &str,
        name: &str,
        labels: &[(&str, &str)],
        created: &str,
    ) -> String {
        let labels: serde_json::Map<String, Value> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
            .collect();
        let obj = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": { "name": name, "namespace": namespace, "uid": format!("uid-{name}"),
                          "labels": labels, "creationTimestamp": created },
            "spec": { "containers": [ { "name": "c", "image": "x:1" } ] }
        });
        self.put("pods", namespace, name, obj)
    }

    fn put(&self, kind: &str, namespace: &str, name: &str, mut obj: Value) -> String {
        let mut s = self.store.lock().unwrap();
        s.bump(&mut obj);
        let rv = obj["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_owned();
        s.objects
            .insert((kind.into(), namespace.into(), name.into()), obj);
        rv
    }

    /// The object now, if there is one.
    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let s = self.store.lock().unwrap();
        s.objects
            .get(&(kind.into(), namespace.into(), name.into()))
            .cloned()
    }

    /// Another writer changes the object: its resourceVersion moves on.
    pub fn touch(&self, kind: &str, namespace: &str, name: &str) {
        self.store
            .lock()
            .unwrap()
            .touch(&(kind.to_owned(), namespace.to_owned(), name.to_owned()));
    }

    /// Another writer changes the object right after its next read (a
    /// GET of it, or a list that holds it): the reader's resourceVersion is
    /// stale by the time it writes.
    pub fn touch_after_next_read(&self, kind: &str, namespace: &str, name: &str) {
        self.store.lock().unwrap().touch_after_read =
            Some((kind.to_owned(), namespace.to_owned(), name.to_owned()));
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.store.lock().unwrap().requests.clone()
    }

    /// The requests other than reads.
    pub fn writes(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method != "GET")
            .collect()
    }
}

impl Drop for KubeStub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Full<Bytes>> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()
    });
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = code;
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

fn ok(v: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Whether `labels` match an equality-based selector.
fn matches(selector: &str, labels: &Value) -> bool {
    selector
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .all(|term| {
            let get = |k: &str| labels.get(k.trim()).and_then(Value::as_str);
            if let Some((k, v)) = term.split_once("!=") {
                get(k) != Some(v.trim())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                get(k) == Some(v.trim())
            } else if let Some(k) = term.strip_prefix('!') {
                get(k).is_none()
            } else {
                get(term).is_some()
            }
        })
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(h, 16) {
                    Ok(c) => out.push(c),
                    Err(_) => out.extend_from_slice(&b[i..i + 3]),
                }
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(
    store: &Mutex<Store>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let (head, body) = req.into_parts();
    let body = http_body_util::Limited::new(body, 1 << 20)
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let path = head.uri.path().to_owned();
    let query = head.uri.query().unwrap_or_default().to_owned();
    let mut s = store.lock().unwrap();
    s.requests.push(Recorded {
        method: head.method.to_string(),
        // An empty query (kube sends `?` with no parameters) is left out.
        path: if query.is_empty() {
            path.clone()
        } else {
            format!("{path}?{query}")
        },
        headers: head
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.clone(),
    });

    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    // (kind, namespace, name?)
    let (kind, ns, name) = match parts.as_slice() {
        ["apis", "apps", "v1", "namespaces", ns, "deployments", name] => {
            ("deployments", *ns, Some(*name))
        }
        ["api", "v1", "namespaces", ns, "pods"] => ("pods", *ns, None),
        ["api", "v1", "namespaces", ns, "pods", name] => ("pods", *ns, Some(*name)),
        _ => {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("the server could not find the requested resource ({path})"),
            );
        }
    };
    let Some(name) = name else {
        if head.method != Method::GET {
            return status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "use GET",
            );
        }
        let selector = query_param(&query, "labelSelector").unwrap_or_default();
        let items: Vec<Value> = s
            .objects
            .iter()
            .filter(|((k, n, _), o)| {
                k == kind && n == ns && matches(&selector, &o["metadata"]["labels"])
            })
            .map(|(_, o)| o.clone())
            .collect();
        let list = json!({
            "apiVersion": "v1", "kind": "PodList",
            "metadata": { "resourceVersion": s.revision.to_string() },
            "items": items
        });
        for o in &items {
            let name = o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            s.after_read(&(kind.to_owned(), ns.to_owned(), name));
        }
        return ok(&list);
    };
    let key = (kind.to_owned(), ns.to_owned(), name.to_owned());
    let Some(current) = s.objects.get(&key).cloned() else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("{kind} \"{name}\" not found"),
        );
    };
    let current_rv = current["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let conflict = || {
        status(
            StatusCode::CONFLICT,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on {kind} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again"
            ),
        )
    };
    match head.method {
        Method::GET => {
            s.after_read(&key);
            ok(&current)
        }
        Method::PATCH => {
            let ct = head
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if ct != "application/merge-patch+json" {
                return status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    &format!("the body of the request was in an unknown format ({ct})"),
                );
            }
            let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
                return status(StatusCode::BAD_REQUEST, "BadRequest", "not JSON");
            };
            if let Some(rv) = patch["metadata"]["resourceVersion"].as_str()
                && rv != current_rv
            {
                return conflict();
            }
            let mut obj = current;
            merge(&mut obj, &patch);
            s.bump(&mut obj);
            s.objects.insert(key, obj.clone());
            ok(&obj)
        }
        Method::DELETE => {
            let opts: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let pre = &opts["preconditions"];
            if let Some(rv) = pre["resourceVersion"].as_str()
                && rv != current_rv
            {
                return conflict();
            }
            if let Some(uid) = pre["uid"].as_str()
                && Some(uid) != current["metadata"]["uid"].as_str()
            {
                return conflict();
            }
            s.objects.remove(&key);
            ok(&current)
        }
        _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "no"),
    }
}
