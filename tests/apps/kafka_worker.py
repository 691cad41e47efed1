"""A Kafka consumer worker run under ``opentelemetry-instrument`` by the tests: a plain consumer loop.

Consumes RECORDS records from TOPIC, then waits to be stopped; it listens on HEALTH_PORT from the moment it has
its partitions until it stops.
"""

import os
import signal
import socket

from kafka import KafkaConsumer, TopicPartition

import gotrails_otel as gt


def main() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    topic = os.environ["TOPIC"]
    consumer = KafkaConsumer(bootstrap_servers=os.environ["KAFKA"], auto_offset_reset="earliest")
    consumer.topics()  # fetches the cluster metadata, so that every partition of the topic is known
    partitions = consumer.partitions_for_topic(topic) or {0}
    consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
    consumer.seek_to_beginning()
    health = socket.socket()
    health.bind(("127.0.0.1", int(os.environ["HEALTH_PORT"])))
    health.listen()
    wanted = int(os.environ.get("RECORDS", "1"))
    for handled, record in enumerate(consumer, start=1):
        with gt.step("HandlePaymentCreated"):
            gt.set_metadata(key=record.key.decode())
        if handled >= wanted:
            break
    consumer.close()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})  # stay up (and reachable) until the test stops us
    health.close()


if __name__ == "__main__":
    main()
