/*
 * probe.h — a small processor linked only into test and bench builds (the probe module,
 * probe_module.c).
 *
 * It exercises every engine feature from outside: calls that append events, timers, tasks with
 * injected failures, and processor failures for repair. Namespace "probe", unit "probe_echo".
 *
 * Start args: any JSON object (kept in the first event). State:
 *   {"appended": n, "last": value, "timers": [{"tag","at"}...pending, earliest first],
 *    "fired": n, "tasks_emitted": n, "tasks_done": n, "tasks_failed": n, "poisoned": bool}
 * Calls (request objects):
 *   {"op":"append","value":V}                 event appended{value}; reply {"seq":N}
 *   {"op":"timer","in_ms":N,"tag":T}          event timer_set{tag,at}; the engine timer is the
 *                                             earliest pending one; at most 64 pending
 *   {"op":"task","tag":T,"fail_times":K,      event task_emitted{tag}; a probe_echo task whose
 *    "fail_until_ms":M,"give_up":B,           first K attempts (and any before M) fail
 *    "unit":U}                                transiently; give_up makes it fail permanently;
 *                                             "unit" sends it to another echo unit
 *   {"op":"child","suffix":S,"args":{..}}     event child_requested{id}; starts probe machine
 *                                             "<id>.S" (ks_proc_start_child); reply {"seq","child"}
 *   {"op":"tell_parent","value":V}            event told_parent{value}; a machine started as a
 *                                             child sends its parent {"type":"probe.note",value}
 *   {"op":"get"}                              no event; reply = state
 *   {"op":"poison"}                           event poisoned: timeouts now fail the machine
 *   {"op":"crash"}                            the processor reports an internal error
 * Signals: timeout -> timer_fired{tag} for each due tag; task_result -> task_done{tag,attempt}
 * or task_failed{tag,error} (from engine.child: child_started{id,replayed} or child_failed{error};
 * from engine.signal: parent_told{ok}); probe.note -> noted{from,value}; repair with payload
 * {"cure":true} -> cured. State also counts children_requested/_started/_failed, told_parent,
 * parent_told and notes, and keeps "parent" from the start args.
 */
#ifndef KS_TESTS_PROBE_H
#define KS_TESTS_PROBE_H

#include "engine/engine.h"
#include "http/router.h"

/* Registers the probe processor and the probe_echo unit (`workers` threads) with `e`. */
int ks_probe_register(struct ks_engine *e, int workers);
/* Registers another echo unit under `name` (borrowed: it must outlive the engine). A task call
 * with "unit": name goes to it: tests that share a database each use their own unit, so one
 * test's worker never claims another test's tasks. */
int ks_probe_register_unit(struct ks_engine *e, const char *name, int workers);
/* Registers the relay `name` (NULL: "probe.file"): every outbox row, in order and exactly once,
 * appended as "pos ns id seq" lines to the file at `path` (fsynced before each confirmation;
 * rows already in the file after a crash are confirmed without writing them again). While a file
 * named `path`.fail exists the relay fails ("told to fail"), so tests can watch its backoff. The
 * probe module registers it when --probe-relay-file (KASSA_PROBE_RELAY_FILE) names a file, under
 * --probe-relay-name (KASSA_PROBE_RELAY_NAME) if set. */
int ks_probe_register_file_relay(struct ks_engine *e, const char *path, const char *name);

/* Adds the probe routes (POST /v0/probe/{id}, POST /v0/probe/{id}/call, GET /v0/probe/{id};
 * probe_api.c) for the probe processor of `engine` (borrowed). */
int ks_probe_routes(struct ks_http_router *r, struct ks_engine *engine);

#endif
