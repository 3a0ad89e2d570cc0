// The records the REST API answers (docs/api.md), as far as the UI reads them.

export interface Metric {
  step: number;
  timestamp: number;
  value: number;
}
export interface Run {
  id: number;
  experiment_id: number;
  name: string;
  status: string;
  start_time: number;
  end_time: number | null;
  heartbeat_time: number;
  end_reason: string;
  created_by: string;
  params: Record<string, string>;
  tags: Record<string, string>;
  metrics: Record<string, Metric>;
}
export interface Experiment {
  id: number;
  name: string;
  description: string;
  created_at: number;
}
export interface ModelVersion {
  model: string;
  version: number;
  run_id: number | null;
  artifact_path: string;
  sha256: string;
  size: number;
  status: string;
  description: string;
  created_at: number;
  created_by: string;
  aliases: string[];
}
export interface Model {
  name: string;
  description: string;
  aliases: Record<string, number>;
  latest_version: number;
  version_count: number;
  created_at: number;
  updated_at: number;
}
export interface LineageRef {
  kind: string;
  id: string;
}
export interface Lineage {
  root: LineageRef;
  nodes: (LineageRef & { direction: string })[];
  edges: { src: LineageRef; dst: LineageRef; relation: string }[];
}
export interface ServeStats {
  batches: number;
  compute_us: number;
  done: number;
  expired: number;
  failed: number;
  queue_depth: number;
  queue_us: number;
  rejected: number;
}
export interface VersionState {
  model: string;
  version: number;
  instances?: number;
  memory_bytes?: number;
  load_seconds?: number;
  stats?: ServeStats;
  weight?: number;
  state?: string;
  comparison?: { agreed: number; disagreed: number; failed: number; dropped: number; agreement: number | null };
}
export interface DeploymentStatus extends VersionState {
  name: string;
  ref: string;
  state: string;
  switches?: number;
  config?: Record<string, unknown>;
  canary?: VersionState;
  shadow?: VersionState;
  error?: string;
}
export interface Deployment {
  name: string;
  model: string;
  ref: string;
  config: Record<string, unknown> & { canary?: { model: string; version: number; weight?: number }; shadow?: { model: string; version: number } };
  created_at: number;
  created_by: string;
  updated_at: number;
  status?: DeploymentStatus;
}
export interface Job {
  id: number;
  name: string;
  kind: string;
  owner: string;
  spec: Record<string, unknown>;
  state: string;
  priority: number;
  threads: number;
  memory_bytes: number;
  max_retries: number;
  attempts: number;
  not_before: number;
  run_id: number | null;
  pid: number;
  created_at: number;
  started_at: number;
  ended_at: number;
  heartbeat_at: number;
  cancel_requested: boolean;
  end_reason: string;
  cpu_seconds?: number;
  core_seconds?: number;
  peak_memory_bytes?: number;
  runner?: string;
}
export interface Trial {
  trial: number;
  params: Record<string, unknown>;
  job_id: number;
  rung: number;
  epochs: number;
  state: string;
  results: (number | null)[] | null;
  end_reason: string;
  job_state: string;
  run_id: number | null;
  core_seconds: number;
}
export interface Search {
  id: number;
  name: string;
  owner: string;
  spec: Record<string, unknown>;
  state: string;
  created_at: number;
  ended_at: number;
  best_trial: number;
  cancel_requested: boolean;
  end_reason: string;
  model_version: number;
  rungs?: number[];
  trials_total?: number;
  metric?: string;
  mode?: string;
  trials?: Trial[];
}
export interface PipelineStepSpec {
  name: string;
  kind: string;
  depends_on: string[];
  fan_out?: unknown;
  retries?: number;
  timeout_seconds?: number;
  cache?: boolean;
}
export interface PipelineRun {
  id: number;
  pipeline: string;
  pipeline_version: number;
  owner: string;
  params: Record<string, unknown>;
  state: string;
  trigger: string;
  event_id: string;
  no_cache: boolean;
  attempt: number;
  created_at: number;
  ended_at: number;
  cancel_requested: boolean;
  end_reason: string;
  steps?: PipelineStep[];
}
export interface PipelineStep {
  step: string;
  kind: string;
  item: number;
  state: string;
  attempts: number;
  job_id: number;
  inputs: unknown;
  outputs: unknown;
  cache_key: string;
  cached: boolean;
  started_at: number;
  ended_at: number;
  end_reason: string;
}
export interface Pipeline {
  id: number;
  name: string;
  owner: string;
  version: number;
  created_at: number;
  updated_at: number;
  description?: string;
  params?: Record<string, unknown>;
  steps?: PipelineStepSpec[];
  spec_text?: string;
  last_run?: PipelineRun | null;
}
export interface Alert {
  id: number;
  rule: string;
  deployment: string;
  severity: string;
  state: string;
  value: number | null;
  message: string;
  started_at: number;
  fired_at: number;
  resolved_at: number;
}
export interface DatasetVersion {
  name: string;
  version: number;
  label: string;
  id: string;
  rows: number;
  tags: string[];
  message: string;
  author: string;
  created_ms: number;
  manifest?: Manifest;
}
export interface ColumnStats {
  type: string;
  count: number;
  nulls: number;
  min?: number;
  max?: number;
  mean?: number;
  std?: number;
  histogram?: { counts: number[]; edges: number[] };
  top?: { value: string; count: number }[];
  distinct_in_sample?: number;
  sample_size?: number;
}
export interface Manifest {
  parent?: string | null;
  rows: number;
  schema: { columns: { name: string; type: string; [k: string]: unknown }[] };
  shards: { id: string; rows: number; bytes: number; raw_bytes?: number }[];
  source?: Record<string, unknown>;
  split?: { fractions?: Record<string, number>; key?: string | null; rows?: Record<string, number> };
  stats?: Record<string, ColumnStats>;
  validation?: Record<string, unknown>;
  [k: string]: unknown;
}
