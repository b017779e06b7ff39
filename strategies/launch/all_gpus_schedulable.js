// Preloaded into NNI's Node manager (NODE_OPTIONS=--require ...) by `resnas create` / `resnas resume`. Three fixes
// to NNI 3.0's local task scheduler (nni_node/common/trial_keeper/task_scheduler/scheduler.js, TaskScheduler):
//
// 1. `schedule` refuses any trial that asks for all of the machine's GPUs:
//        if (gpuNumber >= this.gpus.length) {
//    so on a one-GPU workstation a `trialGpuNumber: 1` trial never starts. The check is the method's first and
//    everything after it (gpuIndices, useActiveGpu, maxTrialNumberPerGpu's fractions, busy GPUs) refuses what
//    cannot be met, so the one operator is rewritten in the module's source as Node compiles it (wrapping the
//    method would mean copying its 30 lines). If NNI's source differs, nothing is changed and the manager's
//    stderr (`nnictl log stderr`) says so.
// 2. When `schedule` refuses (every GPU busy), NNI's v3 compatibility layer (training_service/v3/compat.js,
//    submitTrialJob) asks again at once, and every step of that loop resolves without I/O: the manager spins on
//    microtasks, never serves a socket again, and neither trials, tuner nor `nnictl stop` get through. This
//    happens whenever trialConcurrency exceeds the free GPUs. A refusal now answers after a second, as the same
//    loop already waits when no environment is free.
// 3. Every `schedule` call refreshes the GPU info (task_scheduler/collect_info.js, collectGpuInfo), which runs a
//    Python collector whenever its 10 s cache is stale, with no regard for one still running. A collector takes
//    seconds on a busy machine, so with trials waiting for GPUs (asking again every second) collectors pile up
//    faster than they end: ~390 of them filled 24 GiB here. Unforced refreshes now share the one in flight.
'use strict';
const Module = require('module');
const path = require('path');

const target = path.join('common', 'trial_keeper', 'task_scheduler', 'scheduler.js');
const collectorTarget = path.join('common', 'trial_keeper', 'task_scheduler', 'collect_info.js');
const original = 'if (gpuNumber >= this.gpus.length) {';
const fixed = 'if (gpuNumber > this.gpus.length) {';
const retrySeconds = 1;
const originalCompile = Module.prototype._compile;

function refuseAfterAWhile(TaskScheduler) {
  const schedule = TaskScheduler.prototype.schedule;
  TaskScheduler.prototype.schedule = async function scheduleOrWait(...args) {
    const environment = await schedule.apply(this, args);
    if (environment === null) {
      await new Promise(resolve => setTimeout(resolve, retrySeconds * 1000));
    }
    return environment;
  };
}

function oneCollectorAtATime(collectGpuInfo) {
  let inFlight = null;
  return function collectGpuInfoShared(forceUpdate) {
    if (forceUpdate) {  // a forced refresh (--detail, at start) keeps its own run
      return collectGpuInfo(forceUpdate);
    }
    if (inFlight === null) {
      inFlight = collectGpuInfo(forceUpdate).finally(() => { inFlight = null; });
    }
    return inFlight;
  };
}

Module.prototype._compile = function compileWithAllGpusSchedulable(content, filename) {
  if (typeof filename === 'string' && filename.endsWith(path.sep + collectorTarget)) {
    const result = originalCompile.call(this, content, filename);
    // Replaced before scheduler.js, which requires this module first, takes its own reference to the function.
    if (typeof this.exports.collectGpuInfo === 'function') {
      this.exports.collectGpuInfo = oneCollectorAtATime(this.exports.collectGpuInfo);
    } else {
      process.emitWarning(`resnas: ${filename} exports no collectGpuInfo; GPU collectors may pile up.`);
    }
    return result;
  }
  if (typeof filename !== 'string' || !filename.endsWith(path.sep + target)) {
    return originalCompile.call(this, content, filename);
  }
  if (content.includes(original)) {
    content = content.replace(original, fixed);
  } else if (!content.includes(fixed)) {
    process.emitWarning(`resnas: ${filename} has no "${original}"; a trial asking for all GPUs may never start.`);
  }
  const result = originalCompile.call(this, content, filename);
  if (typeof this.exports.TaskScheduler === 'function') {
    refuseAfterAWhile(this.exports.TaskScheduler);
  } else {
    process.emitWarning(`resnas: ${filename} exports no TaskScheduler; a busy GPU may stall the manager.`);
  }
  return result;
};
