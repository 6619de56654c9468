//! A Hugging Face model directory: `config.json` and one `model.safetensors` or shards
//! listed in `model.safetensors.index.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::ModelConfig;
use crate::dtype::DType;
use crate::error::{LoadError, Result};
use crate::gguf::{GgufFile, GgufModel};
use crate::residency::Residency;
use crate::safetensors::SafetensorsFile;
use crate::storage::{Storage, Tensor};

pub struct Checkpoint {
    pub dir: PathBuf,
    pub config: ModelConfig,
    files: Vec<SafetensorsFile>,
    /// tensor name -> index into `files`
    by_name: BTreeMap<String, usize>,
    /// Set when the checkpoint is a llama.cpp GGUF file (then `files` is empty).
    gguf: Option<Box<GgufModel>>,
}

impl Checkpoint {
    /// Open a model directory (parse `config.json`, map every weight file, check headers),
    /// or a llama.cpp `deepseek2` GGUF file (recognised by its magic or a `.gguf` name),
    /// whose metadata becomes the config and whose tensors take their Hugging Face names.
    pub fn open(dir: &Path) -> Result<Checkpoint> {
        Self::open_with(dir, Residency::Mapped)
    }

    /// [`Checkpoint::open`], with the weight files' bytes held as `residency` asks.
    pub fn open_with(dir: &Path, residency: Residency) -> Result<Checkpoint> {
        if dir.is_file()
            && (crate::gguf::is_gguf(dir)
                || dir
                    .extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("gguf")))
        {
            let m = crate::gguf::open_deepseek2(dir, residency)?;
            return Ok(Checkpoint {
                dir: dir.to_path_buf(),
                config: m.config.clone(),
                files: Vec::new(),
                by_name: BTreeMap::new(),
                gguf: Some(Box::new(m)),
            });
        }
        if !dir.is_dir() {
            return Err(LoadError::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "not a model directory (expected a folder with config.json and *.safetensors)",
                ),
            });
        }
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let index_path = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let mut files = Vec::new();
        let mut by_name = BTreeMap::new();
        if index_path.exists() {
            let shards = read_index(&index_path)?;
            let mut shard_ids: BTreeMap<String, usize> = BTreeMap::new();
            for (tensor, shard) in &shards {
                let id = match shard_ids.get(shard) {
                    Some(&id) => id,
                    None => {
                        let p = dir.join(shard);
                        if !p.is_file() {
                            return Err(LoadError::BadIndex {
                                path: index_path.clone(),
                                reason: format!(
                                    "shard `{shard}` (holding `{tensor}`) does not exist"
                                ),
                            });
                        }
                        files.push(SafetensorsFile::open_with(&p, residency)?);
                        shard_ids.insert(shard.clone(), files.len() - 1);
                        files.len() - 1
                    }
                };
                by_name.insert(tensor.clone(), id);
            }
            for (tensor, &id) in &by_name {
                if files[id].get(tensor).is_none() {
                    return Err(LoadError::BadIndex {
                        path: index_path.clone(),
                        reason: format!(
                            "tensor `{tensor}` is listed in shard {}, which does not hold it",
                            files[id].path.display()
                        ),
                    });
                }
            }
        } else if single.exists() {
            files.push(SafetensorsFile::open_with(&single, residency)?);
            for name in files[0].names() {
                by_name.insert(name.to_string(), 0);
            }
        } else {
            return Err(LoadError::NoWeights {
                path: dir.to_path_buf(),
            });
        }
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            config,
            files,
            by_name,
            gguf: None,
        })
    }

    /// A checkpoint held in memory (weights embedded in a binary, or fetched by a browser):
    /// the text of `config.json` and each safetensors image, parsed in place with no copy.
    /// `dir` only names the source in errors.
    pub fn from_memory(
        dir: &Path,
        config_json: &str,
        files: Vec<(String, Storage)>,
    ) -> Result<Checkpoint> {
        let config = ModelConfig::from_json_str(config_json, &dir.join("config.json"))?;
        let mut parsed = Vec::new();
        let mut by_name = BTreeMap::new();
        for (name, storage) in files {
            let f = SafetensorsFile::from_storage(dir.join(name), storage)?;
            for t in f.names() {
                by_name.insert(t.to_string(), parsed.len());
            }
            parsed.push(f);
        }
        if parsed.is_empty() {
            return Err(LoadError::NoWeights {
                path: dir.to_path_buf(),
            });
        }
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            config,
            files: parsed,
            by_name,
            gguf: None,
        })
    }

    /// The GGUF file this checkpoint was opened from, if it was one: its metadata holds the
    /// tokenizer (`tokenizer.ggml.*`, `tokenizer.chat_template`).
    pub fn gguf(&self) -> Option<&GgufFile> {
        self.gguf.as_ref().map(|m| &m.file)
    }

    /// The GGUF metadata (every key-value pair in file order), if this is a GGUF checkpoint.
    pub fn gguf_metadata(&self) -> Option<&[(String, crate::gguf::GgufValue)]> {
        self.gguf().map(|g| g.metadata.as_slice())
    }

    pub fn contains(&self, name: &str) -> bool {
        match &self.gguf {
            Some(m) => m.tensors.contains_key(name),
            None => self.by_name.contains_key(name),
        }
    }

    pub fn names(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match &self.gguf {
            Some(m) => Box::new(m.tensors.keys().map(|s| s.as_str())),
            None => Box::new(self.by_name.keys().map(|s| s.as_str())),
        }
    }

    /// The file a tensor lives in (for error messages), or the directory if it is unknown.
    pub fn file_of(&self, name: &str) -> PathBuf {
        if self.gguf.is_some() {
            return self.dir.clone();
        }
        match self.by_name.get(name) {
            Some(&id) => self.files[id].path.clone(),
            None => self.dir.clone(),
        }
    }

    pub fn tensor(&self, name: &str) -> Result<&Tensor> {
        if let Some(m) = &self.gguf {
            return match m.tensors.get(name) {
                Some(t) => Ok(t),
                None => Err(match m.unsupported.get(name) {
                    Some(reason) => LoadError::BadTensor {
                        path: self.dir.clone(),
                        tensor: name.to_string(),
                        reason: reason.clone(),
                    },
                    None => LoadError::MissingTensor {
                        path: self.dir.clone(),
                        tensor: name.to_string(),
                    },
                }),
            };
        }
        match self.by_name.get(name) {
            Some(&id) => self.files[id].tensor(name),
            None => Err(LoadError::MissingTensor {
                path: self.dir.clone(),
                tensor: name.to_string(),
            }),
        }
    }

    /// The tensor `name`, checked to have exactly `shape` and one of `dtypes`.
    pub fn tensor_checked(&self, name: &str, shape: &[usize], dtypes: &[DType]) -> Result<&Tensor> {
        let t = self.tensor(name)?;
        if t.shape != shape {
            return Err(LoadError::WrongShape {
                path: self.file_of(name),
                tensor: name.to_string(),
                expected: shape.to_vec(),
                found: t.shape.clone(),
            });
        }
        if !dtypes.contains(&t.dtype) {
            return Err(LoadError::WrongDtype {
                path: self.file_of(name),
                tensor: name.to_string(),
                expected: dtypes
                    .iter()
                    .map(|d| d.name())
                    .collect::<Vec<_>>()
                    .join(" or "),
                found: t.dtype.to_string(),
            });
        }
        Ok(t)
    }

    /// Every tensor of every file (for parameter counts and dtype summaries).
    pub fn tensors(&self) -> Box<dyn Iterator<Item = &Tensor> + '_> {
        match &self.gguf {
            Some(m) => Box::new(m.tensors.values()),
            None => Box::new(
                self.by_name
                    .iter()
                    .filter_map(|(n, &id)| self.files[id].get(n)),
            ),
        }
    }

    /// Total bytes of weight data mapped.
    pub fn weight_bytes(&self) -> u64 {
        self.tensors().map(|t| t.bytes().len() as u64).sum()
    }
}

fn read_index(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |reason: String| LoadError::BadIndex {
        path: path.to_path_buf(),
        reason,
    };
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("missing object `weight_map`".into()))?;
    let mut out = BTreeMap::new();
    for (k, v) in map {
        let shard = v
            .as_str()
            .ok_or_else(|| bad(format!("weight_map[`{k}`] is not a file name")))?;
        if shard.contains('/') || shard.contains('\\') || shard.starts_with('.') {
            return Err(bad(format!(
                "weight_map[`{k}`] = `{shard}` is not a plain file name in this directory"
            )));
        }
        out.insert(k.clone(), shard.to_string());
    }
    Ok(out)
}
