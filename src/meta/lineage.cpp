#include "meta/lineage.h"

#include <deque>
#include <set>
#include <tuple>

#include "core/file_util.h"
#include "meta/store_db.h"

namespace dlsys::meta {

namespace {

Status check_kind(const std::string& kind) {
  static const std::set<std::string> kKinds = {"dataset_version", "run", "model_version",
                                               "deployment", "pipeline_run"};
  if (!kKinds.count(kind))
    return Status::Invalid(
        "lineage kind '{}' is not one of dataset_version, run, model_version, deployment, "
        "pipeline_run",
        kind);
  return Status::OK();
}

}  // namespace

Status LineageStore::add_edge(const std::string& src_kind, const std::string& src_id,
                              const std::string& dst_kind, const std::string& dst_id,
                              const std::string& relation, const Principal& who) {
  DLSYS_RETURN_IF_ERROR(check_kind(src_kind));
  DLSYS_RETURN_IF_ERROR(check_kind(dst_kind));
  if (src_id.empty() || dst_id.empty() || src_id.size() > 512 || dst_id.size() > 512)
    return Status::Invalid("lineage ids must be 1..512 characters");
  if (src_kind == dst_kind && src_id == dst_id)
    return Status::Invalid("a lineage edge cannot point from {}/{} to itself", src_kind, src_id);
  DLSYS_RETURN_IF_ERROR(check_key("relation", relation));
  return db_.tx(true, [&](SqlConnection& c) -> Status {
    DLSYS_RETURN_IF_ERROR(c.exec(
        "INSERT INTO lineage_edges (src_kind, src_id, dst_kind, dst_id, relation, created_at) "
        "VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT (src_kind, src_id, dst_kind, dst_id) DO UPDATE "
        "SET relation = excluded.relation",
        {src_kind, src_id, dst_kind, dst_id, relation, now_ms()}));
    return audit(c, who, "lineage.add", src_kind + "/" + src_id + " -> " + dst_kind + "/" + dst_id,
                 {{"relation", relation}});
  });
}

void to_json(json& j, const LineageGraph& g) {
  auto node = [](const LineageNode& n) { return json{{"kind", n.kind}, {"id", n.id}}; };
  json nodes = json::array(), edges = json::array();
  for (const auto& [n, direction] : g.nodes) {
    json o = node(n);
    o["direction"] = direction;
    nodes.push_back(std::move(o));
  }
  for (const auto& e : g.edges)
    edges.push_back({{"src", node(e.src)}, {"dst", node(e.dst)}, {"relation", e.relation}});
  j = {{"root", node(g.root)}, {"nodes", std::move(nodes)}, {"edges", std::move(edges)}};
}

Result<LineageGraph> LineageStore::graph(const std::string& kind, const std::string& id,
                                         int depth) {
  DLSYS_RETURN_IF_ERROR(check_kind(kind));
  if (depth < 1 || depth > 100) return Status::Invalid("depth {} is out of range 1..100", depth);
  LineageGraph g;
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    g = {};
    g.root = {kind, id};
    std::set<std::pair<std::string, std::string>> seen = {{kind, id}};
    std::set<std::tuple<std::string, std::string, std::string, std::string>> seen_edges;
    g.nodes.push_back({g.root, "root"});
    for (int dir = 0; dir < 2; ++dir) {
      bool down = dir == 0;
      std::deque<std::tuple<std::string, std::string, int>> q = {{kind, id, 0}};
      while (!q.empty() && seen.size() < 10000) {
        auto [k, i, d] = q.front();
        q.pop_front();
        if (d >= depth) continue;
        DLSYS_ASSIGN_OR_RETURN(
            auto rows,
            c.query(down ? "SELECT src_kind, src_id, dst_kind, dst_id, relation FROM lineage_edges "
                           "WHERE src_kind = $1 AND src_id = $2"
                         : "SELECT src_kind, src_id, dst_kind, dst_id, relation FROM lineage_edges "
                           "WHERE dst_kind = $1 AND dst_id = $2",
                    {k, i}));
        for (auto& r : rows) {
          auto key =
              std::make_tuple(sql_text(r[0]), sql_text(r[1]), sql_text(r[2]), sql_text(r[3]));
          if (seen_edges.insert(key).second)
            g.edges.push_back({{std::get<0>(key), std::get<1>(key)},
                               {std::get<2>(key), std::get<3>(key)},
                               sql_text(r[4])});
          std::string nk = down ? std::get<2>(key) : std::get<0>(key);
          std::string ni = down ? std::get<3>(key) : std::get<1>(key);
          if (seen.insert({nk, ni}).second) {
            g.nodes.push_back({{nk, ni}, down ? "downstream" : "upstream"});
            q.emplace_back(nk, ni, d + 1);
          }
        }
      }
    }
    return Status::OK();
  }));
  return g;
}

}  // namespace dlsys::meta
