// The run search language: a filter such as
//   params.lr = '0.1' and metrics.accuracy >= 0.9 and tags.team != 'a' and status = 'FINISHED'
// and an order such as "metrics.accuracy DESC", compiled to portable SQL over the `runs` table
// with $N placeholders appended to `params`.
#pragma once

#include <string>

#include "core/status.h"
#include "meta/sql_db.h"

namespace dlsys::meta {

// Returns the SQL condition for `filter` ("" for an empty filter); errors name the position.
// Clauses are joined by AND; a left side is params.K, tags.K, metrics.K (latest value), status,
// name, start_time or end_time; keys with other characters go in backquotes: metrics.`val loss`.
Result<std::string> compile_run_filter(const std::string& filter, SqlParams* params);

struct RunOrder {
  std::string sql;      // ORDER BY expression list
  std::string join;     // a LEFT JOIN the order needs, or ""
  bool keyset = false;  // true for the default order (start_time DESC): pages by key, not offset
  // An order by a metric: the runs that have it in its value's order (read from latest_metrics'
  // (key, value, run_id) index: a page costs its rows, not a sort of every run), then those
  // without it by id. `sql`/`join` give the same order in one statement (params and tags use it).
  std::string key_table;        // latest_metrics for a metric; "" otherwise
  std::string key_placeholder;  // the key's $N in the parameters
  std::string dir;              // ASC or DESC
};
// Parses "<field> [ASC|DESC]" (default "start_time DESC"); fields as in filters.
Result<RunOrder> parse_run_order(const std::string& order_by, SqlParams* params);

}  // namespace dlsys::meta
