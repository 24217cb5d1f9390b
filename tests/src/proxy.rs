//! A TCP proxy in front of a server the tests cannot restart (the machine's RabbitMQ). For the
//! nodes behind it, [`Proxy::cut`] is the server going away (every connection closed, new
//! ones refused), [`Proxy::restore`] the server coming back on the same port, and
//! [`Proxy::pause`] a server that stops answering without closing anything. What it cannot
//! show: a server that loses its state while the connections stay up.

use std::sync::Arc;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::AbortHandle,
};

/// A proxy on `127.0.0.1:port` to `upstream`.
#[derive(Debug)]
pub struct Proxy {
    /// Where the nodes connect.
    pub port: u16,
    upstream: String,
    /// True while bytes are held back.
    paused: watch::Sender<bool>,
    /// The accept loop and every connection's pump.
    tasks: Arc<parking_lot::Mutex<Vec<AbortHandle>>>,
}

impl Proxy {
    /// Starts one on a free port.
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = Self {
            port,
            upstream: upstream.to_owned(),
            paused: watch::channel(false).0,
            tasks: Arc::default(),
        };
        proxy.serve(listener);
        proxy
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn serve(&self, listener: TcpListener) {
        let (upstream, paused, tasks) = (
            self.upstream.clone(),
            self.paused.clone(),
            self.tasks.clone(),
        );
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let pump = tokio::spawn(pump(client, upstream.clone(), paused.subscribe()));
                tasks.lock().push(pump.abort_handle());
            }
        });
        self.tasks.lock().push(accept.abort_handle());
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
    }

    /// Accepts connections again on the same port.
    pub async fn restore(&self) {
        let listener = crate::eventually(crate::PATIENCE, "the proxy port to bind", async || {
            TcpListener::bind(("127.0.0.1", self.port)).await.ok()
        })
        .await;
        self.serve(listener);
    }

    /// Holds back (true) or passes (false) every byte, connections staying open.
    pub fn pause(&self, paused: bool) {
        self.paused.send_replace(paused);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// Copies bytes both ways between `client` and a new connection to `upstream`, holding them
/// while paused, until either side closes.
async fn pump(client: TcpStream, upstream: String, paused: watch::Receiver<bool>) {
    let Ok(server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let one_way = async |from: &mut tokio::net::tcp::OwnedReadHalf,
                         to: &mut tokio::net::tcp::OwnedWriteHalf,
                         mut paused: watch::Receiver<bool>| {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if paused.wait_for(|p| !*p).await.is_err() {
                return;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = one_way(&mut cr, &mut sw, paused.clone()) => {},
        () = one_way(&mut sr, &mut cw, paused) => {},
    }
}
