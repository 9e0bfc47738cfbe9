/*
 * kafka_mock.c — a Kafka-protocol broker for kassa's black-box tests (tests/blackbox/test_kafka.py;
 * docs/kafka.md): librdkafka's mock cluster in a process of its own.
 *
 *   kafka-mock [BROKERS]     (default 1 broker)
 *
 * Prints the bootstrap address ("127.0.0.1:PORT,...") on one line of stdout, then reads commands,
 * one a line, from stdin, answering each with "ok" or "error ..." on stdout:
 *
 *   down            every broker refuses connections (its data is kept)
 *   up              every broker accepts connections again
 *   topic NAME N    creates topic NAME with N partitions
 *
 * It stops when stdin closes, on SIGTERM or SIGINT. Tests read the topics with independent
 * clients (kcat, confluent-kafka), never with kassa's code.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define MOCK_BROKERS_MAX 5
#define MOCK_LINE_BYTES_MAX 512

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

/* Sets every broker of the cluster down or up. */
static int brokers_set(rd_kafka_mock_cluster_t *mc, int brokers, int up)
{
    for (int id = 1; id <= brokers; id++) {
        rd_kafka_resp_err_t err = up ? rd_kafka_mock_broker_set_up(mc, id)
                                     : rd_kafka_mock_broker_set_down(mc, id);
        if (err)
            return -1;
    }
    return 0;
}

static void command(rd_kafka_mock_cluster_t *mc, int brokers, char *line)
{
    line[strcspn(line, "\r\n")] = '\0';
    char name[256];
    int partitions = 0;
    int rc;
    if (strcmp(line, "down") == 0)
        rc = brokers_set(mc, brokers, 0);
    else if (strcmp(line, "up") == 0)
        rc = brokers_set(mc, brokers, 1);
    else if (sscanf(line, "topic %255s %d", name, &partitions) == 2 && partitions > 0)
        rc = rd_kafka_mock_topic_create(mc, name, partitions, brokers) ? -1 : 0;
    else {
        printf("error unknown command\n");
        fflush(stdout);
        return;
    }
    printf(rc == 0 ? "ok\n" : "error failed\n");
    fflush(stdout);
}

int main(int argc, char **argv)
{
    int brokers = argc > 1 ? atoi(argv[1]) : 1;
    if (brokers < 1 || brokers > MOCK_BROKERS_MAX) {
        fprintf(stderr, "kafka-mock: BROKERS must be 1..%d\n", MOCK_BROKERS_MAX);
        return 2;
    }
    struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: fgets returns */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err)) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "kafka-mock: %s\n", err);
        rd_kafka_conf_destroy(conf);
        return 1;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "kafka-mock: %s\n", err);
        rd_kafka_conf_destroy(conf);
        return 1;
    }
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, brokers);
    if (!mc) {
        fprintf(stderr, "kafka-mock: cannot start the mock cluster\n");
        rd_kafka_destroy(rk);
        return 1;
    }
    printf("%s\n", rd_kafka_mock_cluster_bootstraps(mc));
    fflush(stdout);

    char line[MOCK_LINE_BYTES_MAX];
    while (!stopping && fgets(line, sizeof(line), stdin))
        command(mc, brokers, line);

    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return 0;
}
