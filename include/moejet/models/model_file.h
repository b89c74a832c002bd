#pragma once
// A moejet model file: a safetensors checkpoint whose metadata carries the model config
// ("moejet.model_config") and the format version, so that load_model(path) rebuilds the model
// with no other input. timm's and the MoE Jetpack authors' checkpoints carry no config: the
// caller names the architecture (a preset or model JSON) and the weights are mapped to moejet's
// keys (checkpoint_layout.h) and adapted to the model (e.g. pos_embed resampled) as they load.
// Every command that reads a model (eval, info, convert, recycle, train --init) goes through here.

#include <functional>
#include <string>

#include "moejet/core/json_util.h"
#include "moejet/io/checkpoint_file.h"
#include "moejet/io/state_dict.h"
#include "moejet/models/model_config.h"

namespace moejet::models {

/// The version of the metadata below; files of another version are refused, not misread.
inline constexpr const char* kFormatVersion = "1";
inline constexpr const char* kFormatVersionKey = "moejet.format_version";
inline constexpr const char* kModelConfigKey = "moejet.model_config";
/// The super-classes a Mobile V-MoE router was trained on (data/superclasses.h JSON).
inline constexpr const char* kSuperclassesKey = "moejet.superclasses";
/// The eval preprocessing and class names in timm's pretrained_cfg form (data/preprocess.h).
inline constexpr const char* kPretrainedCfgKey = "moejet.pretrained_cfg";
/// The training config's `data` section: the data set, its splits and class selection.
inline constexpr const char* kDataKey = "moejet.data";

/// The model config stored in a checkpoint's metadata; null JSON if absent (timm files).
/// Throws CheckpointError naming `source` for a format version other than kFormatVersion.
json model_config_from_metadata(const io::Metadata& metadata, const std::string& source = "checkpoint");

/// Loads weights into `model` from a timm-layout, moejet or MoE Jetpack authors' checkpoint (keys
/// mapped by to_moejet_layout, then adapted by the model, e.g. ViT's pos_embed resampled; head
/// dropped when `drop_head` and its shape differs). Returns the load report summary, with one
/// line per layout rewrite and adaptation.
std::string load_model_weights(ImageClassifierImpl& model, const std::string& path, bool drop_head);
/// The same for a state dict already read from `source`.
/// `drop_always`: prefixes skipped whatever their shape (left at their initial values).
std::string load_model_weights(ImageClassifierImpl& model, io::StateDict state, const std::string& source,
                               bool drop_head, const std::vector<std::string>& drop_always = {});

struct LoadedModel {
  json config_json;  ///< the model config as used (after `edit`)
  ModelConfig config;
  ModelPtr model;         ///< on the CPU, weights loaded
  io::Metadata metadata;  ///< the file's metadata
  std::string load_summary;
};

/// Reads the checkpoint at `path` and builds its model with the weights loaded. The config is
/// `model_json` when that is not null (a file without one of its own), else the one the file
/// stores (ConfigError naming the file when there is none). `edit` may change the config JSON
/// before the model is built (e.g. --set overrides).
LoadedModel load_model(const std::string& path, json model_json = nullptr, const std::function<void(json&)>& edit = {});

/// Writes `model`'s weights under timm's keys with `model_config` and the format version in the
/// metadata, plus the `extra` entries; atomically.
void save_model(const std::string& path, const torch::nn::Module& model, const json& model_config,
                io::Metadata extra = {});

}  // namespace moejet::models
