//! A directory laid out like a kubelet-managed Secret volume, updated the
//! way the kubelet updates it (a new timestamped directory, then an atomic
//! rename of the `..data` symlink).

use std::path::PathBuf;

/// A directory laid out like a kubelet-managed Secret volume:
/// `tls.crt -> ..data/tls.crt`, `..data -> ..<timestamp>/`.
pub struct SecretVolume {
    dir: tempfile::TempDir,
    generation: u32,
}

impl SecretVolume {
    pub fn new(cert_pem: &str, key_pem: &str) -> Self {
        let mut volume = Self {
            dir: tempfile::tempdir().expect("tempdir"),
            generation: 0,
        };
        volume.update(cert_pem, key_pem);
        for file in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{file}"), volume.dir.path().join(file))
                .expect("file symlink");
        }
        volume
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("tls.crt")
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join("tls.key")
    }

    /// Writes a new timestamped directory and atomically repoints `..data`.
    pub fn update(&mut self, cert_pem: &str, key_pem: &str) {
        let root = self.dir.path();
        let old = std::fs::read_link(root.join("..data")).ok();
        self.generation += 1;
        let name = format!("..2025_01_01_00_00_{:02}.000000000", self.generation);
        std::fs::create_dir(root.join(&name)).expect("data dir");
        std::fs::write(root.join(&name).join("tls.crt"), cert_pem).expect("cert");
        std::fs::write(root.join(&name).join("tls.key"), key_pem).expect("key");
        std::os::unix::fs::symlink(&name, root.join("..data_tmp")).expect("tmp symlink");
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).expect("swap ..data");
        if let Some(old) = old {
            std::fs::remove_dir_all(root.join(old)).expect("remove old data");
        }
    }
}
