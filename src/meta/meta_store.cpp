#include "meta/meta_store.h"

namespace dlsys::meta {

Result<std::unique_ptr<MetaStore>> MetaStore::open(const std::string& url, size_t max_connections,
                                                   const SqlOptions& options) {
  DLSYS_ASSIGN_OR_RETURN(auto db, StoreDb::open(url, max_connections, options));
  return std::unique_ptr<MetaStore>(new MetaStore(std::move(db)));
}

}  // namespace dlsys::meta
