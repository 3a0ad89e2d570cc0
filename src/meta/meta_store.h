// The metadata store: one database (SQLite or PostgreSQL, written once in portable SQL) and the
// concepts kept in it, each its own class over the shared StoreDb:
//   runs()      experiments, runs, params/tags, metrics, search, artifact records (run_tracking.h)
//   registry()  models, versions, aliases (model_registry.h)
//   lineage()   typed edges between datasets, runs, model versions, deployments (lineage.h)
//   tokens()    API tokens (auth.h)
//   deployments() what the server serves (deployments.h)
//   jobs()      the training service's job queue (job_queue.h)
//   searches()  hyperparameter searches and their trials (search_store.h)
//   pipelines() pipelines, their runs and steps, the step cache (pipeline_store.h)
//   monitor()   monitoring's configuration, delayed labels and alerts (monitor_store.h)
//   db()        schema version, engine, pool statistics, the audit log (store_db.h)
// Every write and its audit record commit in one transaction. Thread-safe.
#pragma once

#include <memory>
#include <string>

#include "core/status.h"
#include "meta/auth.h"
#include "meta/deployments.h"
#include "meta/job_queue.h"
#include "meta/lineage.h"
#include "meta/model_registry.h"
#include "meta/monitor_store.h"
#include "meta/pipeline_store.h"
#include "meta/run_tracking.h"
#include "meta/search_store.h"
#include "meta/store_db.h"

namespace dlsys::meta {

class MetaStore {
 public:
  // Opens the database at `url` (an SQLite path or postgresql://...) and brings its schema to
  // the newest version (migrations run once, under a lock, in a transaction).
  static Result<std::unique_ptr<MetaStore>> open(const std::string& url, size_t max_connections,
                                                 const SqlOptions& options = {});

  StoreDb& db() { return *db_; }
  RunTracking& runs() { return runs_; }
  ModelRegistry& registry() { return registry_; }
  LineageStore& lineage() { return lineage_; }
  TokenStore& tokens() { return tokens_; }
  DeploymentStore& deployments() { return deployments_; }
  JobQueue& jobs() { return jobs_; }
  SearchStore& searches() { return searches_; }
  PipelineStore& pipelines() { return pipelines_; }
  MonitorStore& monitor() { return monitor_; }

 private:
  explicit MetaStore(std::unique_ptr<StoreDb> db)
      : db_(std::move(db)),
        runs_(*db_),
        registry_(*db_),
        lineage_(*db_),
        tokens_(*db_),
        deployments_(*db_),
        jobs_(*db_),
        searches_(*db_, jobs_),
        pipelines_(*db_, jobs_),
        monitor_(*db_) {}

  std::unique_ptr<StoreDb> db_;
  RunTracking runs_;
  ModelRegistry registry_;
  LineageStore lineage_;
  TokenStore tokens_;
  DeploymentStore deployments_;
  JobQueue jobs_;
  SearchStore searches_;
  PipelineStore pipelines_;
  MonitorStore monitor_;
};

}  // namespace dlsys::meta
