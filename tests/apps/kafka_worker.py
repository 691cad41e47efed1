"""A Kafka consumer worker run under ``opentelemetry-instrument`` by the tests: a plain consumer loop.

Consumes RECORDS records from TOPIC, then exits; it listens on HEALTH_PORT once it has partitions assigned.
"""

import os
import socket

from kafka import KafkaConsumer, TopicPartition

import gotrails_otel as gt


def main() -> None:
    topic = os.environ["TOPIC"]
    consumer = KafkaConsumer(bootstrap_servers=os.environ["KAFKA"], auto_offset_reset="earliest")
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
    health.close()


if __name__ == "__main__":
    main()
