/*
 * Unit tests for acquire's decisions: how a miss chains the layers (schema
 * alone, or schema under fixtures with its own key, lock and parent), where
 * a layer's build starts (fresh, on a prefix, on the schema layer), when a
 * prefix is looked for, and which cached entry a manifest extends the most.
 * The restores and builds around them run in the integration suite.
 */
#include "unit.h"

#include "acquire.h"
#include "acquire_int.h"
#include "config.h"
#include "fingerprint.h"
#include "log.h"
#include "store.h"

static struct cfg_step steps[2];
static struct cfg cfg;

static int
setup(void **state)
{
	(void)state;
	memset(steps, 0, sizeof(steps));
	memset(&cfg, 0, sizeof(cfg));
	steps[0].name = "app";
	steps[0].layer = CFG_LAYER_SCHEMA;
	steps[0].incremental = true;
	steps[1].name = "seed";
	steps[1].layer = CFG_LAYER_FIXTURES;
	cfg.steps = steps;
	cfg.n_steps = 1;
	return 0;
}

static void
test_plan_schema_only(void **state)
{
	(void)state;
	struct fp_result fp;
	memset(&fp, 0, sizeof(fp));
	snprintf(fp.key, sizeof(fp.key), "%s", "aaaa");
	snprintf(fp.schema_key, sizeof(fp.schema_key), "%s", "aaaa");
	fp.manifest = "m";
	fp.schema_manifest = "m";
	struct layer_plan plan[2];
	assert_int_equal(acquire_plan(&fp, plan), 1);
	assert_int_equal(plan[0].layer, CFG_LAYER_SCHEMA);
	assert_ptr_equal(plan[0].key, fp.key);
	assert_null(plan[0].parent);
	assert_ptr_equal(plan[0].manifest, fp.manifest);
	assert_false(plan[0].try_key);
	assert_false(plan[0].lock);
	assert_true(plan[0].last);
}

static void
test_plan_layers_chain(void **state)
{
	(void)state;
	struct fp_result fp;
	memset(&fp, 0, sizeof(fp));
	snprintf(fp.key, sizeof(fp.key), "%s", "full");
	snprintf(fp.schema_key, sizeof(fp.schema_key), "%s", "schema");
	fp.manifest = "full manifest";
	fp.schema_manifest = "schema manifest";
	fp.has_fixtures = true;
	struct layer_plan plan[2];
	assert_int_equal(acquire_plan(&fp, plan), 2);
	/* The schema layer: its own key, restored when cached, built under its lock, not the last. */
	assert_int_equal(plan[0].layer, CFG_LAYER_SCHEMA);
	assert_ptr_equal(plan[0].key, fp.schema_key);
	assert_ptr_equal(plan[0].manifest, fp.schema_manifest);
	assert_null(plan[0].parent);
	assert_true(plan[0].try_key);
	assert_true(plan[0].lock);
	assert_false(plan[0].last);
	/* The fixtures layer on it: the full key, its parent the schema key, the clones at its end. */
	assert_int_equal(plan[1].layer, CFG_LAYER_FIXTURES);
	assert_ptr_equal(plan[1].key, fp.key);
	assert_ptr_equal(plan[1].parent, plan[0].key);
	assert_ptr_equal(plan[1].manifest, fp.manifest);
	assert_false(plan[1].try_key);
	assert_false(plan[1].lock);
	assert_true(plan[1].last);
}

static void
test_layer_start(void **state)
{
	(void)state;
	assert_int_equal(acquire_layer_start(CFG_LAYER_SCHEMA, false), LAYER_FRESH);
	assert_int_equal(acquire_layer_start(CFG_LAYER_SCHEMA, true), LAYER_ON_PREFIX);
	assert_int_equal(acquire_layer_start(CFG_LAYER_FIXTURES, false), LAYER_ON_SCHEMA);
	assert_int_equal(acquire_layer_start(CFG_LAYER_FIXTURES, true), LAYER_ON_SCHEMA);
}

static void
test_wants_prefix(void **state)
{
	(void)state;
	assert_true(acquire_wants_prefix(&cfg, CFG_LAYER_SCHEMA));
	assert_false(acquire_wants_prefix(&cfg, CFG_LAYER_FIXTURES));
	cfg.n_steps = 2;
	assert_false(acquire_wants_prefix(&cfg, CFG_LAYER_FIXTURES));
	steps[1].incremental = true;
	assert_true(acquire_wants_prefix(&cfg, CFG_LAYER_FIXTURES));
	steps[0].incremental = false;
	assert_false(acquire_wants_prefix(&cfg, CFG_LAYER_SCHEMA));
	cfg.n_steps = 0;
	assert_false(acquire_wants_prefix(&cfg, CFG_LAYER_SCHEMA));
}

#define HEAD "pgstash-manifest 1\nstep app\n"
#define F1 "file app 0001.sql sha256=01\n"
#define F2 "file app 0002.sql sha256=02\n"
#define F3 "file app 0003.sql sha256=03\n"

static void
entry(struct entry_meta *m, const char *key, enum cfg_layer layer, const char *manifest)
{
	memset(m, 0, sizeof(*m));
	snprintf(m->key, sizeof(m->key), "%s", key);
	m->layer = layer;
	m->manifest = manifest ? xstrdup(manifest) : NULL;
}

static void
test_pick_prefix(void **state)
{
	(void)state;
	struct entry_meta all[6];
	entry(&all[0], "one", CFG_LAYER_SCHEMA, HEAD F1);
	entry(&all[1], "two", CFG_LAYER_SCHEMA, HEAD F1 F2);
	entry(&all[2], "fixtures", CFG_LAYER_FIXTURES, HEAD F1 F2);
	entry(&all[3], "nomanifest", CFG_LAYER_SCHEMA, NULL);
	entry(&all[4], "edited", CFG_LAYER_SCHEMA, HEAD F1 "file app 0002.sql sha256=ff\n");
	entry(&all[5], "same", CFG_LAYER_SCHEMA, HEAD F1 F2 F3);
	size_t best = 99;
	/* The longest entry the manifest extends; the same set, an edited file, another layer do not count. */
	assert_int_equal(acquire_pick_prefix(all, 6, CFG_LAYER_SCHEMA, HEAD F1 F2 F3, &cfg, &best), 2);
	assert_int_equal(best, 1);
	/* The first of equal scores. */
	assert_int_equal(acquire_pick_prefix(all, 2, CFG_LAYER_SCHEMA, HEAD F1 F3, &cfg, &best), 1);
	assert_int_equal(best, 0);
	/* A fixtures entry only for the fixtures layer. */
	assert_int_equal(acquire_pick_prefix(all, 6, CFG_LAYER_FIXTURES, HEAD F1 F2 F3, &cfg, &best), 2);
	assert_int_equal(best, 2);
	/* Nothing extends: -1. */
	assert_int_equal(acquire_pick_prefix(all, 6, CFG_LAYER_SCHEMA, HEAD F3, &cfg, &best), -1);
	assert_int_equal(acquire_pick_prefix(all, 0, CFG_LAYER_SCHEMA, HEAD F1 F2, &cfg, &best), -1);
	/* Without incremental = yes, gaining files does not qualify. */
	steps[0].incremental = false;
	assert_int_equal(acquire_pick_prefix(all, 6, CFG_LAYER_SCHEMA, HEAD F1 F2 F3, &cfg, &best), -1);
	for (size_t i = 0; i < 6; i++)
		entry_meta_free(&all[i]);
}

int
main(void)
{
	log_min_level = LOG_ERROR;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_plan_schema_only, setup),
		cmocka_unit_test_setup(test_plan_layers_chain, setup),
		cmocka_unit_test_setup(test_layer_start, setup),
		cmocka_unit_test_setup(test_wants_prefix, setup),
		cmocka_unit_test_setup(test_pick_prefix, setup),
	};
	return cmocka_run_group_tests_name("acquire", tests, NULL, NULL);
}
