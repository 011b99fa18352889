//! etcd v3 backend for the fullauto `Dcs` trait (see issue 5).
