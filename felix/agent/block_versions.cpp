// block_versions.cpp — see block_versions.hpp.
#include "felix/agent/block_versions.hpp"

#include <functional>
#include <variant>

#include "felix/cni/cni.hpp"

namespace tabby::felix {
namespace {
size_t digest_of(const std::string& name, const BlockAffinity& a) {
  return std::hash<std::string>{}(cni::block_affinity_manifest(name, a));
}
}  // namespace

void BlockVersions::observe(const std::vector<DocEvent>& events) {
  for (const auto& e : events) {
    if (e.key.kind != kBlockAffinityKind || !e.key.ns.empty()) continue;
    if (e.deleted) {
      seen_.erase(e.key.name);
      continue;
    }
    // The text a store hands back differs by store: compare the block as tabby writes it.
    size_t digest = 0;  // unreadable: never matches a plan
    ParsedManifests pm = parse_manifests(e.text, e.source);
    if (pm.errors.empty() && pm.resources.size() == 1 && pm.resources[0].key.kind == Kind::BlockAffinity)
      digest = digest_of(e.key.name, std::get<BlockAffinity>(pm.resources[0].body));
    seen_[e.key.name] = {e.revision, digest};
  }
}

std::optional<DocEvent> BlockVersions::current(const Resource& original) const {
  const auto* a = std::get_if<BlockAffinity>(&original.body);
  if (!a) return std::nullopt;
  const std::string& name = original.key.name;
  auto it = seen_.find(name);
  if (it == seen_.end()) return std::nullopt;
  // The file store compares texts: the text tabby wrote (what the plan saw, re-rendered).
  std::string text = cni::block_affinity_manifest(name, *a);
  if (it->second.digest != std::hash<std::string>{}(text)) return std::nullopt;
  return DocEvent{DocKey{kBlockAffinityKind, "", name}, std::move(text), it->second.revision, false, ""};
}

}  // namespace tabby::felix
