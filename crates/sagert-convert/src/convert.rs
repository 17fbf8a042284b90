//! The two conversions: GGUF → transformers directory and back.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value as Json};

use crate::names::{gguf_to_hf_name, hf_to_gguf_name, permute_rows, rotary_of, unpermute_rows, Rotary};
use crate::params::ModelParams;
use crate::tokenizer::Vocab;
use crate::{ConvertError, GgufDtype, HfDtype, Options, Progress, Summary};

pub(crate) fn read_json(path: &Path) -> Result<Json, ConvertError> {
    let text = fs::read_to_string(path).map_err(ConvertError::io(path))?;
    serde_json::from_str(&text).map_err(|source| ConvertError::Json { path: path.to_path_buf(), source })
}

fn write_json(path: &Path, value: &Json) -> Result<(), ConvertError> {
    let text = serde_json::to_string_pretty(value).expect("JSON values serialise");
    fs::write(path, text + "\n").map_err(ConvertError::io(path))
}

/// A sibling of `target` to write into before renaming it into place.
fn partial_path(target: &Path) -> PathBuf {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    target.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

fn pool(options: &Options<'_>) -> Result<rayon::ThreadPool, ConvertError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(options.threads.max(1))
        .build()
        .map_err(|e| ConvertError::Threads(e.to_string()))
}

fn report(options: &Options<'_>, done: usize, total: usize, tensor: &str) {
    if let Some(progress) = options.progress {
        progress(Progress { done, total, tensor });
    }
}

/// Read a GGUF file's header (metadata and tensor table).
pub(crate) fn read_gguf(path: &Path) -> Result<(Content, BufReader<File>), ConvertError> {
    let file = File::open(path).map_err(ConvertError::io(path))?;
    let mut reader = BufReader::new(file);
    let content = Content::read(&mut reader).map_err(|e| ConvertError::Format {
        path: path.to_path_buf(),
        message: format!("not a GGUF file: {e}"),
    })?;
    Ok((content, reader))
}

pub(crate) fn gguf_to_hf(
    gguf: &Path,
    out_dir: &Path,
    dtype: HfDtype,
    options: &Options<'_>,
) -> Result<Summary, ConvertError> {
    if out_dir.is_dir() && fs::read_dir(out_dir).map_err(ConvertError::io(out_dir))?.next().is_some() {
        return Err(ConvertError::OutputExists { path: out_dir.to_path_buf() });
    }
    let (content, mut reader) = read_gguf(gguf)?;
    let has_output = content.tensor_infos.contains_key("output.weight");
    let params = ModelParams::from_gguf(gguf, &content.metadata, has_output)?;
    let vocab = Vocab::from_gguf(gguf, &content.metadata)?;

    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort_by_key(|n| order_key(n));
    let target = match dtype {
        HfDtype::F32 => DType::F32,
        HfDtype::F16 => DType::F16,
        HfDtype::Bf16 => DType::BF16,
    };
    let mut tensors = BTreeMap::new();
    let mut skipped = Vec::new();
    pool(options)?.install(|| -> Result<(), ConvertError> {
        for (i, name) in names.iter().enumerate() {
            let Some(hf) = gguf_to_hf_name(name) else {
                skipped.push(name.to_string());
                continue;
            };
            let q = content.tensor(&mut reader, name, &Device::Cpu).map_err(|e| ConvertError::Format {
                path: gguf.to_path_buf(),
                message: format!("tensor `{name}`: {e}"),
            })?;
            let mut t = q.dequantize(&Device::Cpu).map_err(ConvertError::tensor(name))?;
            if params.arch.permutes_qk() {
                match rotary_of(name) {
                    Rotary::Query => t = unpermute_rows(&t, params.rotary_heads(true), name)?,
                    Rotary::Key => t = unpermute_rows(&t, params.rotary_heads(false), name)?,
                    Rotary::None => {}
                }
            }
            tensors.insert(hf, t.to_dtype(target).map_err(ConvertError::tensor(name))?);
            report(options, i + 1, names.len(), name);
        }
        Ok(())
    })?;

    let partial = partial_path(out_dir);
    if partial.exists() {
        fs::remove_dir_all(&partial).map_err(ConvertError::io(&partial))?;
    }
    fs::create_dir_all(&partial).map_err(ConvertError::io(&partial))?;
    let weights = partial.join("model.safetensors");
    let info = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(tensors.iter(), Some(info), &weights)
        .map_err(|e| ConvertError::Format { path: weights.clone(), message: e.to_string() })?;
    let mut config = params.to_config();
    config["torch_dtype"] = json!(match dtype {
        HfDtype::F32 => "float32",
        HfDtype::F16 => "float16",
        HfDtype::Bf16 => "bfloat16",
    });
    write_json(&partial.join("config.json"), &config)?;
    write_json(&partial.join("tokenizer.json"), &vocab.to_tokenizer_json())?;
    write_json(
        &partial.join("tokenizer_config.json"),
        &vocab.to_tokenizer_config(params.max_position_embeddings),
    )?;
    let mut generation = json!({"_from_model_config": true});
    for (key, id) in [
        ("bos_token_id", params.bos_token_id),
        ("eos_token_id", params.eos_token_id),
        ("pad_token_id", params.pad_token_id),
    ] {
        if let Some(id) = id {
            generation[key] = json!(id);
        }
    }
    write_json(&partial.join("generation_config.json"), &generation)?;
    if out_dir.is_dir() {
        // Empty (checked above): rename replaces it.
        fs::remove_dir(out_dir).map_err(ConvertError::io(out_dir))?;
    }
    fs::rename(&partial, out_dir).map_err(ConvertError::io(out_dir))?;
    let bytes = fs::metadata(out_dir.join("model.safetensors")).map_err(ConvertError::io(out_dir))?.len();
    Ok(Summary { tensors: tensors.len(), skipped, bytes, params })
}

/// Sort tensors as llama.cpp's converter writes them: embeddings, the blocks in
/// order, the final norm and the output head.
fn order_key(gguf_name: &str) -> (usize, usize, String) {
    if gguf_name.starts_with("token_embd") {
        (0, 0, gguf_name.into())
    } else if let Some(rest) = gguf_name.strip_prefix("blk.") {
        let layer = rest.split('.').next().and_then(|l| l.parse().ok()).unwrap_or(usize::MAX);
        (1, layer, gguf_name.into())
    } else if gguf_name.starts_with("output_norm") {
        (2, 0, gguf_name.into())
    } else {
        (3, 0, gguf_name.into())
    }
}

/// The safetensors files of a transformers directory: `model.safetensors`, or
/// the shards a `model.safetensors.index.json` names.
pub(crate) fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, ConvertError> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if !index.is_file() {
        return Err(ConvertError::missing(dir, "neither model.safetensors nor model.safetensors.index.json"));
    }
    let map = read_json(&index)?;
    let files = map
        .get("weight_map")
        .and_then(Json::as_object)
        .ok_or_else(|| ConvertError::missing(&index, "no `weight_map`"))?;
    let mut shards: Vec<PathBuf> = files.values().filter_map(Json::as_str).map(|f| dir.join(f)).collect();
    shards.sort();
    shards.dedup();
    Ok(shards)
}

/// Tensors transformers saves that llama.cpp does not load.
fn ignorable(hf_name: &str) -> bool {
    hf_name.ends_with("rotary_emb.inv_freq")
}

fn ggml_dtype(dtype: GgufDtype, t: &Tensor) -> GgmlDType {
    if t.rank() < 2 {
        // Norms and biases stay F32, as llama.cpp's converter keeps them.
        return GgmlDType::F32;
    }
    match dtype {
        GgufDtype::F32 => GgmlDType::F32,
        GgufDtype::F16 => GgmlDType::F16,
        GgufDtype::Q8_0 if t.dims()[t.rank() - 1].is_multiple_of(32) => GgmlDType::Q8_0,
        // Rows that are not whole Q8_0 blocks fall back to F16, as in llama.cpp.
        GgufDtype::Q8_0 => GgmlDType::F16,
    }
}

pub(crate) fn hf_to_gguf(
    dir: &Path,
    out: &Path,
    dtype: GgufDtype,
    options: &Options<'_>,
) -> Result<Summary, ConvertError> {
    let config_path = dir.join("config.json");
    let params = ModelParams::from_config(&config_path, &read_json(&config_path)?)?;
    let tokenizer_path = dir.join("tokenizer.json");
    let tokenizer_config_path = dir.join("tokenizer_config.json");
    let tokenizer_config =
        if tokenizer_config_path.is_file() { Some(read_json(&tokenizer_config_path)?) } else { None };
    let vocab = Vocab::from_hf(
        &tokenizer_path,
        &read_json(&tokenizer_path)?,
        tokenizer_config.as_ref(),
        params.vocab_size,
    )?;

    let mut quantized: Vec<(String, QTensor)> = Vec::new();
    let mut skipped = Vec::new();
    let files = weight_files(dir)?;
    let total = params.expected_tensors();
    pool(options)?.install(|| -> Result<(), ConvertError> {
        for file in &files {
            let tensors = candle_core::safetensors::load(file, &Device::Cpu)
                .map_err(|e| ConvertError::Format { path: file.clone(), message: e.to_string() })?;
            let mut tensors: Vec<(String, Tensor)> = tensors.into_iter().collect();
            tensors.sort_by(|a, b| a.0.cmp(&b.0));
            for (hf, t) in tensors {
                let Some(name) = hf_to_gguf_name(&hf) else {
                    if ignorable(&hf) {
                        skipped.push(hf);
                        continue;
                    }
                    return Err(ConvertError::unsupported(
                        file,
                        format!("tensor `{hf}` (no GGUF counterpart)"),
                    ));
                };
                if name == "output.weight" && params.tie_word_embeddings {
                    skipped.push(hf);
                    continue;
                }
                let mut t = t.to_dtype(DType::F32).map_err(ConvertError::tensor(&hf))?;
                if params.arch.permutes_qk() {
                    match rotary_of(&name) {
                        Rotary::Query => t = permute_rows(&t, params.rotary_heads(true), &hf)?,
                        Rotary::Key => t = permute_rows(&t, params.rotary_heads(false), &hf)?,
                        Rotary::None => {}
                    }
                }
                let q = QTensor::quantize(&t, ggml_dtype(dtype, &t)).map_err(ConvertError::tensor(&hf))?;
                quantized.push((name, q));
                report(options, quantized.len(), total, &hf);
            }
        }
        Ok(())
    })?;
    quantized.sort_by_key(|(n, _)| order_key(n));
    let have: Vec<&str> = quantized.iter().map(|(n, _)| n.as_str()).collect();
    for required in ["token_embd.weight", "output_norm.weight"] {
        if !have.contains(&required) {
            return Err(ConvertError::missing(dir, format!("no tensor for `{required}`")));
        }
    }
    if have.len() != total {
        return Err(ConvertError::missing(
            dir,
            format!("{} tensors, expected {total} for {} layers", have.len(), params.num_hidden_layers),
        ));
    }

    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let file_type = match dtype {
        GgufDtype::F32 => 0,
        GgufDtype::F16 => 1,
        GgufDtype::Q8_0 => 7,
    };
    let mut meta: Vec<(String, Value)> = params.to_gguf();
    meta.insert(1, ("general.name".into(), Value::String(name)));
    meta.insert(2, ("general.alignment".into(), Value::U32(gguf_file::DEFAULT_ALIGNMENT as u32)));
    meta.insert(3, ("general.file_type".into(), Value::U32(file_type)));
    meta.push(("general.quantization_version".into(), Value::U32(2)));
    meta.extend(vocab.to_gguf());
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = quantized.iter().map(|(k, v)| (k.as_str(), v)).collect();

    let partial = partial_path(out);
    let written = write_gguf(&partial, &meta_refs, &tensor_refs)
        .and_then(|()| fs::rename(&partial, out).map_err(ConvertError::io(out)));
    if written.is_err() {
        let _ = fs::remove_file(&partial);
    }
    written?;
    let bytes = fs::metadata(out).map_err(ConvertError::io(out))?.len();
    report(options, quantized.len(), quantized.len(), "");
    Ok(Summary { tensors: quantized.len(), skipped, bytes, params })
}

fn write_gguf(
    path: &Path,
    meta: &[(&str, &Value)],
    tensors: &[(&str, &QTensor)],
) -> Result<(), ConvertError> {
    let file = File::create(path).map_err(ConvertError::io(path))?;
    let mut writer = BufWriter::new(file);
    gguf_file::write(&mut writer, meta, tensors)
        .map_err(|e| ConvertError::Format { path: path.to_path_buf(), message: e.to_string() })?;
    writer.flush().map_err(ConvertError::io(path))?;
    writer.get_ref().sync_all().map_err(ConvertError::io(path))
}
